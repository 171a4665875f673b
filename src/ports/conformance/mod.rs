//! Shared conformance suites: one function per contract clause, run against every adapter.
pub mod journal;
pub mod keys;
pub mod lease;
pub mod relay;
pub mod session_metadata;
pub mod store;

/// The body of the synchronous suites' `*_conformance_tests!` macros: a test module `$name`
/// with one `#[test]` per clause listed by `$clauses`, each calling
/// `conformance::$module::<clause>` with a borrow of a fresh fixture from `$factory`, or of
/// what it dereferences to when `*` is passed last.
#[macro_export]
#[doc(hidden)]
macro_rules! __conformance_tests {
    ($name:ident, $factory:expr, $module:ident, $clauses:ident $(, $deref:tt)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            macro_rules! clause {
                ($clause:ident) => {
                    #[test]
                    fn $clause() {
                        let fixture = ($factory)();
                        $crate::ports::conformance::$module::$clause(&$($deref)? fixture);
                    }
                };
            }
            $crate::$clauses!(clause);
        }
    };
}
