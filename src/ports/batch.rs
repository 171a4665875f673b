//! How much one read of ops may return: [`Relay::pull`](crate::ports::Relay::pull) and
//! [`Journal::ops_from`](crate::ports::Journal::ops_from) take a [`BatchLimit`].

/// A bound on one batch of ops: at most [`ops`](Self::ops) ops, and no op that would take the
/// batch's size past [`bytes`](Self::bytes), except that a batch's first op is always taken (an
/// op larger than the byte budget still moves, alone).
///
/// An op's size is the length of its binary record,
/// [`encoded_len`](crate::domain::oplog::encoded_len). Once one op does not fit, the batch is
/// full: a reader does not look past it for a smaller op, so a batch is always a prefix of
/// what there is to read, in the reader's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchLimit {
    /// The most ops in the batch.
    pub ops: usize,
    /// The most encoded bytes in the batch, once it holds one op.
    pub bytes: usize,
}

impl BatchLimit {
    /// No bound at all.
    pub const UNLIMITED: Self = Self::ops(usize::MAX);

    /// At most `ops` ops, of any size.
    pub const fn ops(ops: usize) -> Self {
        Self {
            ops,
            bytes: usize::MAX,
        }
    }

    /// At most `ops` ops and, past the first, `bytes` encoded bytes.
    pub const fn new(ops: usize, bytes: usize) -> Self {
        Self { ops, bytes }
    }

    /// An empty batch to fill against this limit.
    pub fn fill(self) -> BatchFill {
        BatchFill {
            limit: self,
            ops: 0,
            bytes: 0,
            full: self.ops == 0,
        }
    }
}

/// A batch being filled against a [`BatchLimit`], for adapters: ask [`BatchFill::admit`] before
/// adding each op.
#[derive(Debug, Clone)]
pub struct BatchFill {
    limit: BatchLimit,
    ops: usize,
    bytes: usize,
    full: bool,
}

impl BatchFill {
    /// Counts the next op into the batch if it fits, and says whether it did. `size` gives the
    /// op's encoded size; it is called only when the limit bounds bytes. Once an op does not
    /// fit, the batch is full and every later op is refused too.
    pub fn admit(&mut self, size: impl FnOnce() -> usize) -> bool {
        if self.full {
            return false;
        }
        if self.limit.bytes != usize::MAX {
            let bytes = self.bytes.saturating_add(size());
            if self.ops > 0 && bytes > self.limit.bytes {
                self.full = true;
                return false;
            }
            self.bytes = bytes;
        }
        self.ops += 1;
        self.full = self.ops >= self.limit.ops;
        true
    }

    /// How many more ops the batch could take at most (the byte budget may stop it sooner).
    pub fn ops_left(&self) -> usize {
        if self.full {
            0
        } else {
            self.limit.ops - self.ops
        }
    }

    /// Whether the batch takes no more ops.
    pub fn is_full(&self) -> bool {
        self.full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(limit: BatchLimit, sizes: &[usize]) -> usize {
        let mut fill = limit.fill();
        sizes.iter().take_while(|&&s| fill.admit(|| s)).count()
    }

    #[test]
    fn ops_and_bytes_both_bound_the_batch() {
        assert_eq!(admitted(BatchLimit::ops(2), &[1, 1, 1]), 2);
        assert_eq!(admitted(BatchLimit::ops(0), &[1]), 0);
        assert_eq!(admitted(BatchLimit::new(10, 10), &[4, 4, 4]), 2);
        assert_eq!(admitted(BatchLimit::new(10, 12), &[4, 4, 4, 1]), 3);
        assert_eq!(admitted(BatchLimit::new(2, 100), &[4, 4, 4]), 2);
        assert_eq!(
            admitted(BatchLimit::UNLIMITED, &[usize::MAX, usize::MAX]),
            2
        );
    }

    #[test]
    fn the_first_op_always_fits_and_a_refusal_ends_the_batch() {
        assert_eq!(admitted(BatchLimit::new(10, 5), &[100, 1]), 1);
        let mut fill = BatchLimit::new(10, 5).fill();
        assert!(fill.admit(|| 3));
        assert!(!fill.admit(|| 3));
        assert!(fill.is_full());
        assert!(
            !fill.admit(|| 1),
            "a smaller op after a refusal is refused too"
        );
        assert_eq!(fill.ops_left(), 0);
    }

    #[test]
    fn sizes_are_asked_only_when_bytes_are_bounded() {
        let mut fill = BatchLimit::ops(3).fill();
        assert!(fill.admit(|| unreachable!("no byte budget")));
        assert_eq!(fill.ops_left(), 2);
    }
}
