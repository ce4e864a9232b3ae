//! Pooled PostgreSQL sessions that keep their prepared statements.
//!
//! Every query of the backend is a `&'static str`; a session prepares each one the first time it
//! runs it and reuses the statement afterwards, so a request costs one round trip per statement
//! instead of two, and the server plans each query once per connection. (Prepared statements
//! belong to the session, not to a transaction: a rollback keeps them.)

use std::collections::HashMap;

use ::postgres::types::ToSql;
use ::postgres::{Client, Row, Statement, Transaction};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// One connection and its statement cache.
pub(super) struct Session {
    client: Client,
    statements: HashMap<&'static str, Statement>,
}

/// Opens sessions for the pool and tells it which ones died.
pub(super) struct Manager {
    pub config: ::postgres::Config,
    pub tls: MakeRustlsConnect,
}

impl r2d2::ManageConnection for Manager {
    type Connection = Session;
    type Error = ::postgres::Error;

    fn connect(&self) -> Result<Session, Self::Error> {
        Ok(Session {
            client: self.config.connect(self.tls.clone())?,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, session: &mut Session) -> Result<(), Self::Error> {
        session.client.simple_query("").map(drop)
    }

    fn has_broken(&self, session: &mut Session) -> bool {
        session.client.is_closed()
    }
}

/// Prepares `sql` once per session.
fn prepared(
    statements: &mut HashMap<&'static str, Statement>,
    prepare: impl FnOnce(&str) -> Result<Statement, ::postgres::Error>,
    sql: &'static str,
) -> Result<Statement, StoreError> {
    if let Some(s) = statements.get(sql) {
        return Ok(s.clone());
    }
    let statement = prepare(sql)?;
    statements.insert(sql, statement.clone());
    Ok(statement)
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl Session {
    /// Starts a transaction that shares this session's statement cache.
    pub fn transaction(&mut self) -> Result<Tx<'_>, StoreError> {
        Ok(Tx {
            tx: self.client.transaction()?,
            statements: &mut self.statements,
        })
    }

    /// Statements that are not cached (DDL, one-off commands).
    pub fn batch_execute(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.client.batch_execute(sql)?)
    }

    /// All rows of one statement (outside a transaction: a single consistent read).
    pub fn query(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
        let client = &mut self.client;
        let s = prepared(&mut self.statements, |q| client.prepare(q), sql)?;
        Ok(self.client.query(&s, params)?)
    }

    /// At most one row.
    pub fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, StoreError> {
        let client = &mut self.client;
        let s = prepared(&mut self.statements, |q| client.prepare(q), sql)?;
        Ok(self.client.query_opt(&s, params)?)
    }

    /// Exactly one row.
    pub fn query_one(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row, StoreError> {
        let client = &mut self.client;
        let s = prepared(&mut self.statements, |q| client.prepare(q), sql)?;
        Ok(self.client.query_one(&s, params)?)
    }
}

/// A transaction whose statements are prepared once per session.
pub(super) struct Tx<'a> {
    tx: Transaction<'a>,
    statements: &'a mut HashMap<&'static str, Statement>,
}

impl Tx<'_> {
    fn statement(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        let tx = &mut self.tx;
        prepared(self.statements, |q| tx.prepare(q), sql)
    }

    /// All rows.
    pub fn query(&mut self, sql: &'static str, params: Params<'_>) -> Result<Vec<Row>, StoreError> {
        let s = self.statement(sql)?;
        Ok(self.tx.query(&s, params)?)
    }

    /// At most one row.
    pub fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> Result<Option<Row>, StoreError> {
        let s = self.statement(sql)?;
        Ok(self.tx.query_opt(&s, params)?)
    }

    /// Exactly one row.
    pub fn query_one(&mut self, sql: &'static str, params: Params<'_>) -> Result<Row, StoreError> {
        let s = self.statement(sql)?;
        Ok(self.tx.query_one(&s, params)?)
    }

    /// Rows affected.
    pub fn execute(&mut self, sql: &'static str, params: Params<'_>) -> Result<u64, StoreError> {
        let s = self.statement(sql)?;
        Ok(self.tx.execute(&s, params)?)
    }

    /// Statements that are not cached (DDL).
    pub fn batch_execute(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.tx.batch_execute(sql)?)
    }

    /// Commits; on error everything is rolled back.
    pub fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit()?)
    }
}
