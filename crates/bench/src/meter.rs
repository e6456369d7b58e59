//! Byte counters of the two access links, read cheaply (from the link
//! emulators' `/proc/<pid>/net/dev`, which shows their namespace) so they
//! can be sampled every 100 ms; and the progress line.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use hybrid::{Direction, Link};
use lab::topology::{link_bytes, load_state};
use serde::{Deserialize, Serialize};

/// Bytes that left each access link so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Towards the home over the fixed line.
    pub dsl_down: u64,
    /// Towards the HAG over the fixed line.
    pub dsl_up: u64,
    /// Towards the home over the mobile link.
    pub lte_down: u64,
    /// Towards the HAG over the mobile link.
    pub lte_up: u64,
}

impl Counters {
    /// `self - earlier`, per counter.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            dsl_down: self.dsl_down.saturating_sub(earlier.dsl_down),
            dsl_up: self.dsl_up.saturating_sub(earlier.dsl_up),
            lte_down: self.lte_down.saturating_sub(earlier.lte_down),
            lte_up: self.lte_up.saturating_sub(earlier.lte_up),
        }
    }

    /// (dsl, lte) bytes in one direction.
    pub fn dir(&self, dir: Direction) -> (u64, u64) {
        match dir {
            Direction::Downstream => (self.dsl_down, self.lte_down),
            Direction::Upstream => (self.dsl_up, self.lte_up),
        }
    }
}

/// One sample of a time series: seconds since the start, counters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the transfer started.
    pub t: f64,
    /// Counters at that time (since the start).
    pub c: Counters,
}

/// Reads the link counters of a lab.
#[derive(Debug)]
pub(crate) struct Meter {
    lab: String,
    emu_pids: Option<(u32, u32)>,
}

fn dev_tx(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let mut cpe0 = None;
    let mut core0 = None;
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes ...
        let tx: Option<u64> = rest.split_whitespace().nth(8).and_then(|v| v.parse().ok());
        match name.trim() {
            "cpe0" => cpe0 = tx,
            "core0" => core0 = tx,
            _ => {}
        }
    }
    Some((cpe0?, core0?))
}

impl Meter {
    pub(crate) fn new(lab: &str) -> Self {
        let emu_pids = load_state(lab).ok().and_then(|st| {
            let find = |role: &str| st.pids.iter().find(|(r, _)| r == role).map(|(_, p)| *p);
            Some((find("emu-dsl")?, find("emu-lte")?))
        });
        Self {
            lab: lab.to_string(),
            emu_pids,
        }
    }

    /// The counters now.
    pub(crate) fn read(&self) -> Counters {
        if let Some((d, l)) = self.emu_pids {
            if let (Some(dsl), Some(lte)) = (dev_tx(d), dev_tx(l)) {
                return Counters {
                    dsl_down: dsl.0,
                    dsl_up: dsl.1,
                    lte_down: lte.0,
                    lte_up: lte.1,
                };
            }
        }
        let dsl = link_bytes(&self.lab, Link::Dsl).unwrap_or((0, 0));
        let lte = link_bytes(&self.lab, Link::Lte).unwrap_or((0, 0));
        Counters {
            dsl_down: dsl.0,
            dsl_up: dsl.1,
            lte_down: lte.0,
            lte_up: lte.1,
        }
    }
}

/// The progress line: `[ 12/87] what is running [#####     ]  45%  text`.
#[derive(Debug)]
pub(crate) struct Progress {
    total: usize,
    done: usize,
    label: String,
    tty: bool,
    started: Instant,
    last_len: usize,
}

impl Progress {
    pub(crate) fn new(total: usize) -> Self {
        Self {
            total,
            done: 0,
            label: String::new(),
            tty: std::io::stdout().is_terminal(),
            started: Instant::now(),
            last_len: 0,
        }
    }

    /// A new step begins.
    pub(crate) fn step(&mut self, label: impl Into<String>) {
        self.done += 1;
        self.label = label.into();
        self.update(0.0, "");
    }

    fn head(&self) -> String {
        let el = self.started.elapsed().as_secs();
        format!(
            "[{:>3}/{:<3} {:>2}:{:02}] {}",
            self.done.min(self.total),
            self.total,
            el / 60,
            el % 60,
            self.label
        )
    }

    /// Redraws the current step (only on a terminal).
    pub(crate) fn update(&mut self, frac: f64, text: &str) {
        if !self.tty {
            return;
        }
        let width = 20;
        let filled = (frac.clamp(0.0, 1.0) * width as f64).round() as usize;
        let line = format!(
            "{} [{}{}] {:>3.0}% {text}",
            self.head(),
            "#".repeat(filled),
            " ".repeat(width - filled),
            frac.clamp(0.0, 1.0) * 100.0
        );
        let pad = self.last_len.saturating_sub(line.chars().count());
        print!("\r{line}{}", " ".repeat(pad));
        self.last_len = line.chars().count();
        let _ = std::io::stdout().flush();
    }

    /// Ends the current step with its result.
    pub(crate) fn finish(&mut self, text: &str) {
        let line = format!("{}  {text}", self.head());
        if self.tty {
            let pad = self.last_len.saturating_sub(line.chars().count());
            println!("\r{line}{}", " ".repeat(pad));
        } else {
            println!("{line}");
        }
        self.last_len = 0;
    }

    /// A line of its own (headings, notes).
    pub(crate) fn note(&mut self, text: &str) {
        if self.tty && self.last_len > 0 {
            println!();
        }
        self.last_len = 0;
        println!("{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_subtract() {
        let a = Counters {
            dsl_down: 10,
            dsl_up: 5,
            lte_down: 7,
            lte_up: 1,
        };
        let b = Counters {
            dsl_down: 15,
            dsl_up: 5,
            lte_down: 17,
            lte_up: 0,
        };
        let d = b.since(&a);
        assert_eq!(d.dir(Direction::Downstream), (5, 10));
        assert_eq!(d.dir(Direction::Upstream), (0, 0));
    }

    #[test]
    fn own_net_dev_parses_when_devices_exist() {
        // This process has no cpe0/core0: no counters rather than zeros.
        assert!(dev_tx(std::process::id()).is_none());
    }
}
