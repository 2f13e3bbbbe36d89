pub mod codec;
pub mod fanout;
pub mod market;
pub mod partition;
