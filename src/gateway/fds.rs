//! File descriptors: the process limit, and the reserve that keeps probes
//! answering when the rest are used up.
//!
//! Every connection holds a descriptor, and so do Kafka's sockets, the
//! runtime's epoll and the logs. When they run out, `accept` fails with
//! `EMFILE` and a listener can no longer take anything, `/healthz` included.
//! Two things keep the last descriptors for the edge itself:
//!
//! * **The zone.** The kernel always hands out the lowest free descriptor
//!   number, so a socket accepted with a number in the last `--fd-reserve`
//!   below the limit proves that every lower descriptor is in use. Such a
//!   connection is never served normally: it gets an answer to a probe, or a
//!   canned `503`, within a second, and its descriptor is free again.
//! * **The spare.** One descriptor (`/dev/null`) is held from the start.
//!   When `accept` fails for want of descriptors, the spare is closed, one
//!   pending connection is accepted into its place and answered the same
//!   way, and the spare is reopened as soon as a descriptor is free.
//!
//! It never answers a connection itself: it says whether one landed in the
//! reserve, and the door decides what it gets.

use std::{fs::File, os::fd::RawFd};

use rlimit::Resource;

/// The `RLIMIT_NOFILE` of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: u64,
    pub hard: u64,
}

impl Limit {
    /// The limit in force now.
    pub fn current() -> std::io::Result<Limit> {
        let (soft, hard) = Resource::NOFILE.get()?;
        Ok(Limit { soft, hard })
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (a process may do so
/// without privileges) and returns the limit it then has. The default soft
/// limit is often 1,024, far below what `--max-connections` needs.
pub fn raise_limit() -> std::io::Result<Limit> {
    rlimit::increase_nofile_limit(u64::MAX)?;
    Limit::current()
}

/// Whether an `accept` error means the process (`EMFILE`) or the system
/// (`ENFILE`) is out of descriptors.
pub fn exhausted(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// The zone and the spare of one listener.
pub struct Reserve {
    /// Descriptor numbers from here up are the zone.
    zone: u64,
    spare: Option<File>,
}

impl Reserve {
    /// A reserve of the last `size` descriptors below the current soft limit,
    /// and a spare descriptor.
    pub fn new(size: u64) -> Reserve {
        let soft = Limit::current().map_or(u64::MAX, |l| l.soft);
        Reserve {
            zone: soft.saturating_sub(size),
            spare: open_spare(),
        }
    }

    /// Whether a socket just accepted as `fd` lies in the zone: every
    /// descriptor below it is in use.
    pub fn scarce(&self, fd: RawFd) -> bool {
        fd as u64 >= self.zone
    }

    /// Closes the spare, if held, to make room for one connection; `false`
    /// when there is none to give.
    pub fn release_spare(&mut self) -> bool {
        self.spare.take().is_some()
    }

    /// Reopens the spare if it was given away and a descriptor is free.
    pub fn restore_spare(&mut self) {
        if self.spare.is_none() {
            self.spare = open_spare();
        }
    }
}

fn open_spare() -> Option<File> {
    File::open("/dev/null").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zone_is_the_top_of_the_limit() {
        let limit = Limit::current().unwrap();
        let r = Reserve::new(10);
        assert!(r.scarce((limit.soft - 10) as RawFd));
        assert!(!r.scarce((limit.soft - 11) as RawFd));
        assert!(!r.scarce(0));
    }

    #[test]
    fn the_spare_is_given_once_and_restored() {
        let mut r = Reserve::new(10);
        assert!(r.release_spare());
        assert!(!r.release_spare());
        r.restore_spare();
        assert!(r.release_spare());
    }

    #[test]
    fn exhaustion_is_emfile_or_enfile() {
        assert!(exhausted(&std::io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(exhausted(&std::io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!exhausted(&std::io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
