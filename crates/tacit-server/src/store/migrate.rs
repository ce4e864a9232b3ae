//! Versioned schema migrations, shared by the backends: each backend lists its migrations in
//! order (version 1, 2, ...), records the version it reached in the database, and applies the
//! missing ones at start-up, each in one transaction. A database whose version is newer than the
//! newest migration this build knows is refused: an older node must not write to a layout it
//! does not understand.

use super::StoreError;

/// One schema step.
#[derive(Clone, Copy, Debug)]
pub(super) struct Migration {
    /// Version reached once this step is applied (1, 2, ... without gaps).
    pub version: i64,
    /// What the step does, for the operator's log.
    pub name: &'static str,
    /// The statements (DDL), applied in one transaction.
    pub sql: &'static str,
}

/// The migrations still to apply to a database at version `current`, in order; refuses a
/// database newer than `known`.
pub(super) fn pending(
    current: i64,
    known: &'static [Migration],
) -> Result<&'static [Migration], StoreError> {
    let newest = known.last().map_or(0, |m| m.version);
    if current > newest {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known: newest,
        });
    }
    let applied = known.iter().take_while(|m| m.version <= current).count();
    Ok(&known[applied..])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const STEPS: &[Migration] = &[
        Migration {
            version: 1,
            name: "one",
            sql: "",
        },
        Migration {
            version: 2,
            name: "two",
            sql: "",
        },
    ];

    #[test]
    fn pending_steps_follow_the_current_version() {
        assert_eq!(pending(0, STEPS).unwrap().len(), 2);
        assert_eq!(pending(1, STEPS).unwrap()[0].version, 2);
        assert!(pending(2, STEPS).unwrap().is_empty());
    }

    #[test]
    fn a_newer_database_is_refused_by_name() {
        let err = pending(3, STEPS).unwrap_err();
        assert!(matches!(
            err,
            StoreError::SchemaTooNew { found: 3, known: 2 }
        ));
        assert!(err.to_string().contains("upgrade the server"), "{err}");
    }

    #[test]
    fn versions_are_gap_free_in_every_backend() {
        for list in [
            super::super::sqlite::MIGRATIONS,
            super::super::postgres::MIGRATIONS,
        ] {
            for (i, m) in list.iter().enumerate() {
                assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            }
        }
    }
}
