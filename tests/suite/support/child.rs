//! Helpers for tests that drive a child process and kill it: a line reader that tells a
//! reported line from one cut off by the kill, a stderr collector, and a guard that reaps the
//! child if the test bails out.

use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;

/// What the stdout reader forwards.
pub enum Line {
    /// A line whose newline was written (the child reported it), without the newline.
    Complete(String),
    /// Bytes cut off by the kill before their newline: not a report.
    Partial(String),
}

/// Forwards the child's stdout line by line until it closes.
pub fn spawn_reader(stdout: impl Read + Send + 'static) -> (Receiver<Line>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let msg = match line.strip_suffix('\n') {
                        Some(l) => Line::Complete(l.to_owned()),
                        None => Line::Partial(line),
                    };
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
            }
        }
    });
    (rx, handle)
}

/// Collects the child's stderr, for failure reports.
pub fn spawn_stderr(stderr: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    })
}

/// Kills and reaps the child if the test bails out while it still runs.
pub struct ChildGuard(pub Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
