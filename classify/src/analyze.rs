//! Classification of normalized SQL text with `pg_query`, PostgreSQL's own parser.
//!
//! [`analyze`] is given the lexer's **normalized** text, in which every string constant is
//! `'?'` and every numeric constant `0`. A class therefore never depends on a literal value,
//! and the code below never looks at one: where PostgreSQL's behaviour would depend on a
//! value, the value is treated as the worst case (`EXPLAIN (ANALYZE 0)` runs the inner
//! statement as far as we know; `LANGUAGE '?'` is an untrusted language). The only values
//! read are those the grammar produces from keywords (`READ WRITE` in `BEGIN READ WRITE`).
//!
//! # How a statement is classified
//!
//! The top-level node decides the class (the table below); a generic walk over the whole
//! parse tree gathers the facts that may sit anywhere in it: relations (`RangeVar`),
//! function calls (`FuncCall`), data-modifying statements at any depth (a `SELECT` with
//! `WITH d AS (DELETE …)` is a write), `UPDATE`/`DELETE` without `WHERE`, row-locking
//! clauses and `INTO` clauses. The walk is driven by `pg_query`'s `serde::Serialize`
//! implementations of its protobuf types, so it reaches every field of every node type
//! without a hand-written list that could miss one (`pg_query`'s own `nodes()` iterator
//! covers a subset of node types only).
//!
//! | class | statements |
//! |---|---|
//! | read | `SELECT` / `VALUES` / `TABLE` without a data-modifying part or `INTO`; `SHOW`; `EXPLAIN` without `ANALYZE`; `FETCH` and `MOVE` (they return or skip rows of a cursor whose query was classified at `DECLARE`) |
//! | write | `INSERT`, `UPDATE`, `DELETE`, `MERGE`; any `SELECT`, `DECLARE` or `COPY (query) TO` whose tree holds one of those; `LOCK TABLE` (it blocks writers; PostgreSQL asks for write privileges for every mode but `ACCESS SHARE`); `NOTIFY` (its payload reaches other sessions, the only session-level statement with an effect outside the session) |
//! | ddl | `CREATE` / `ALTER` / `DROP` of schema objects, `TRUNCATE`, `COMMENT`, `SECURITY LABEL`, `REFRESH MATERIALIZED VIEW`, `CREATE RULE`, `CREATE TRIGGER`, `SELECT … INTO`, `CREATE TABLE … AS` (even when its query also writes: principals allowed ddl are owners), `CREATE FUNCTION`/`PROCEDURE` in a [trusted language](TRUSTED_LANGUAGES), publications, foreign servers, user mappings |
//! | dcl | `GRANT`, `REVOKE` (objects and roles), `CREATE`/`ALTER`/`DROP ROLE`/`USER`/`GROUP`, `ALTER ROLE … SET`, `ALTER … RENAME` of a role, `ALTER DEFAULT PRIVILEGES`, `REASSIGN OWNED`, `DROP OWNED`, `ALTER … OWNER TO` (also as an `ALTER TABLE` command), row-level security (`CREATE`/`ALTER`/`DROP POLICY`, `ALTER TABLE … ENABLE`/`DISABLE`/`FORCE`/`NO FORCE ROW LEVEL SECURITY`), `CREATE SCHEMA` with an embedded `GRANT`, `SET`/`RESET ROLE`, `SET`/`RESET SESSION AUTHORIZATION` |
//! | admin | `VACUUM`, `ANALYZE`, `CLUSTER`, `REINDEX`, `CHECKPOINT`, `LOAD`, `ALTER SYSTEM`; databases, tablespaces, extensions, languages, foreign-data wrappers, subscriptions and event triggers (create, alter, rename, drop); `SET`/`RESET` of a [dangerous setting](is_dangerous_setting); a transaction or session characteristic of `READ WRITE` (it undoes a read-only default exactly like `SET default_transaction_read_only`) |
//! | transaction | `BEGIN`, `START TRANSACTION`, `COMMIT`/`END`, `ROLLBACK`/`ABORT`, `SAVEPOINT`, `RELEASE`, `ROLLBACK TO`, `PREPARE TRANSACTION`, `COMMIT`/`ROLLBACK PREPARED`, `SET TRANSACTION`, `SET TRANSACTION SNAPSHOT`, `SET CONSTRAINTS` |
//! | session | `SET`/`RESET` of any other setting, `RESET ALL` (it returns settings to their session-start values, which include startup-packet options, so it cannot undo what a gateway imposed at connect), `SET SESSION CHARACTERISTICS` (not `READ WRITE`), `PREPARE`, `EXECUTE` (a placeholder: the proxy replaces it with the prepared statement's class), `DEALLOCATE`, `DISCARD`, `LISTEN`, `UNLISTEN`, `DECLARE` of a read, `CLOSE` |
//! | copy_in / copy_out | `COPY … FROM STDIN` / `COPY … TO STDOUT`, and the same with a server file (flag `server_file`) |
//! | copy_program | `COPY … PROGRAM`, whatever the direction or query |
//! | procedural | `DO`, `CALL`, `CREATE FUNCTION`/`PROCEDURE` in a language that is not trusted or not known (`c`, `internal`, `plpython3u`, a language given as a string, …) |
//! | unknown | a parse failure, and every node type not named above (fail closed) |
//!
//! `EXPLAIN` with an `ANALYZE` option, whatever its value, runs the inner statement, so it
//! takes the inner statement's class, flags and `executes` (`EXPLAIN ANALYZE EXECUTE p`).
//!
//! Functions called from a read (`SELECT pg_read_file(…)`, `SELECT set_config(…)`,
//! `SELECT nextval(…)`) stay reads: every call is listed in [`Statement::functions`] and
//! the policy's danger list decides about them.
//!
//! Limits: `pg_query` decodes its parse tree with prost, whose recursion limit (100 nested
//! messages) turns a deeply nested statement into a decode error, hence unknown: a chain of
//! 46 binary operators (`a || b || …`, left-deep), 16 nested scalar subqueries, 23 nested
//! `CASE`s or 47 nested function calls. Flat lists (`AND`/`OR` chains, `IN` lists, `CASE`
//! branches, select lists) do not nest. Lifting the limit (prost's `no-recursion-limit`)
//! is not safe as it stands: the decoder and this walk recurse on the thread's stack, and
//! a statement libpg_query accepts can then overflow a 1 MiB stack, aborting the process.

use std::fmt;

use pg_query::protobuf::{
    self, AlterTableType, DiscardMode, ObjectType, RoleStmtType, TransactionStmtKind,
    VariableSetKind,
};
use pg_query::{NodeEnum, ParserOptions};
use serde::ser::{self, Serialize};

use crate::{Class, Flag, Flags, Statement};

/// Languages in which `CREATE FUNCTION` / `CREATE PROCEDURE` is ddl: PostgreSQL's own
/// trusted languages (`sql`, `plpgsql`, and the trusted variants `plperl` and `pltcl`, whose
/// interpreters deny file-system and process access). Everything else, including
/// third-party languages that call themselves trusted, is procedural. Compared exactly:
/// language names are identifiers, lower-cased unless quoted.
pub const TRUSTED_LANGUAGES: [&str; 4] = ["sql", "plpgsql", "plperl", "pltcl"];

/// Settings whose `SET` / `RESET` is admin, not session: they switch off replication
/// triggers and rules, auditing and logging, read-only defaults, row security or catalog
/// and data-integrity safeguards, or load code.
pub const DANGEROUS_SETTINGS: [&str; 16] = [
    "session_replication_role",
    "lo_compat_privileges",
    "allow_system_table_mods",
    "allow_in_place_tablespaces",
    "zero_damaged_pages",
    "ignore_system_indexes",
    "ignore_checksum_failure",
    "row_security",
    "default_transaction_read_only",
    "transaction_read_only",
    "track_activities",
    "event_triggers",
    "restrict_nonsystem_relation_kind",
    "session_preload_libraries",
    "local_preload_libraries",
    "dynamic_library_path",
];

/// Prefixes of dangerous settings: every `log_*` setting (`log_statement`,
/// `log_min_duration_statement`, ...) and the pgaudit extension's settings.
pub const DANGEROUS_SETTING_PREFIXES: [&str; 2] = ["log_", "pgaudit."];

/// Whether `SET`/`RESET` of `name` is admin. PostgreSQL matches setting names without
/// regard to case, so this does too. `role` and `session_authorization` are not listed:
/// changing them is dcl.
pub fn is_dangerous_setting(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    DANGEROUS_SETTINGS.contains(&name.as_str())
        || DANGEROUS_SETTING_PREFIXES
            .iter()
            .any(|p| name.starts_with(p))
}

/// Classifies every statement of a normalized query string, in order.
///
/// A parse failure yields one [`Statement::unknown`] with the parser's message (it quotes
/// normalized text only, never a literal). An empty string yields no statements.
pub fn analyze(normalized: &str) -> Vec<Statement> {
    // libpg_query reports errors as values; the unwind guard is for the Rust side of
    // `pg_query::parse` (it post-processes the tree), so that no input can take a worker down.
    let parsed = std::panic::catch_unwind(|| pg_query::parse(normalized, ParserOptions::DEFAULT));
    let parsed = match parsed {
        Ok(Ok(parsed)) => parsed,
        Ok(Err(e)) => return vec![Statement::unknown(format!("does not parse: {e}"))],
        Err(_) => return vec![Statement::unknown("the parser failed on this statement")],
    };
    parsed
        .protobuf
        .stmts
        .iter()
        .map(
            |raw| match raw.stmt.as_deref().and_then(|n| n.node.as_ref()) {
                Some(node) => statement(node),
                None => Statement::unknown("the parser returned an empty statement"),
            },
        )
        .collect()
}

/// Classifies one parsed statement.
fn statement(node: &NodeEnum) -> Statement {
    let Facts {
        root,
        flags,
        tables,
        functions,
        writes,
        into_clauses,
    } = Facts::collect(node);
    let mut st = Statement {
        class: Class::Unknown,
        flags,
        command: String::new(),
        tables,
        functions,
        prepares: None,
        executes: None,
        deallocates: None,
        reason: None,
    };
    let (class, command): (Class, std::borrow::Cow<'static, str>) = match node {
        // Reads and writes.
        NodeEnum::SelectStmt(_) => {
            if into_clauses > 0 {
                (Class::Ddl, "SELECT INTO".into())
            } else if writes > 0 {
                (Class::Write, "SELECT".into())
            } else {
                (Class::Read, "SELECT".into())
            }
        }
        NodeEnum::InsertStmt(_) => (Class::Write, "INSERT".into()),
        NodeEnum::UpdateStmt(_) => (Class::Write, "UPDATE".into()),
        NodeEnum::DeleteStmt(_) => (Class::Write, "DELETE".into()),
        NodeEnum::MergeStmt(_) => (Class::Write, "MERGE".into()),
        NodeEnum::VariableShowStmt(_) => (Class::Read, "SHOW".into()),
        NodeEnum::FetchStmt(f) => (Class::Read, if f.ismove { "MOVE" } else { "FETCH" }.into()),
        NodeEnum::ExplainStmt(e) => {
            let analyze = e
                .options
                .iter()
                .any(|o| defname(o).is_some_and(|n| n.eq_ignore_ascii_case("analyze")));
            match e.query.as_deref().and_then(|q| q.node.as_ref()) {
                Some(inner) if analyze => {
                    let mut inner = statement(inner);
                    inner.command = format!("EXPLAIN ANALYZE {}", inner.command);
                    return inner;
                }
                Some(_) => (Class::Read, "EXPLAIN".into()),
                None => (Class::Unknown, "EXPLAIN".into()),
            }
        }
        NodeEnum::LockStmt(_) => (Class::Write, "LOCK TABLE".into()),
        NodeEnum::NotifyStmt(_) => (Class::Write, "NOTIFY".into()),

        // COPY.
        NodeEnum::CopyStmt(c) => {
            if !c.is_program && !c.filename.is_empty() {
                st.flags.insert(Flag::ServerFile);
            }
            let class = if c.is_program {
                Class::CopyProgram
            } else if writes > 0 {
                Class::Write
            } else if c.is_from {
                Class::CopyIn
            } else {
                Class::CopyOut
            };
            (class, "COPY".into())
        }

        // Session.
        NodeEnum::VariableSetStmt(v) => set_class(v),
        NodeEnum::PrepareStmt(p) => match p.query.as_deref().and_then(|q| q.node.as_ref()) {
            Some(inner) => {
                st.prepares = Some((p.name.clone(), Box::new(statement(inner))));
                (Class::Session, "PREPARE".into())
            }
            None => (Class::Unknown, "PREPARE".into()),
        },
        NodeEnum::ExecuteStmt(e) => {
            st.executes = Some(e.name.clone());
            (Class::Session, "EXECUTE".into())
        }
        NodeEnum::DeallocateStmt(d) => {
            st.deallocates = Some(if d.isall || d.name.is_empty() {
                None
            } else {
                Some(d.name.clone())
            });
            (Class::Session, "DEALLOCATE".into())
        }
        NodeEnum::DiscardStmt(d) => match DiscardMode::try_from(d.target) {
            Ok(DiscardMode::DiscardAll) => {
                st.deallocates = Some(None);
                (Class::Session, "DISCARD ALL".into())
            }
            Ok(DiscardMode::DiscardPlans) => (Class::Session, "DISCARD PLANS".into()),
            Ok(DiscardMode::DiscardSequences) => (Class::Session, "DISCARD SEQUENCES".into()),
            Ok(DiscardMode::DiscardTemp) => (Class::Session, "DISCARD TEMP".into()),
            _ => (Class::Unknown, "DISCARD".into()),
        },
        NodeEnum::ListenStmt(_) => (Class::Session, "LISTEN".into()),
        NodeEnum::UnlistenStmt(_) => (Class::Session, "UNLISTEN".into()),
        NodeEnum::DeclareCursorStmt(_) => (
            if writes > 0 {
                Class::Write
            } else {
                Class::Session
            },
            "DECLARE CURSOR".into(),
        ),
        NodeEnum::ClosePortalStmt(_) => (Class::Session, "CLOSE".into()),

        // Transactions.
        NodeEnum::TransactionStmt(t) => transaction_class(t),
        NodeEnum::ConstraintsSetStmt(_) => (Class::Transaction, "SET CONSTRAINTS".into()),

        // Procedural.
        NodeEnum::DoStmt(_) => (Class::Procedural, "DO".into()),
        NodeEnum::CallStmt(_) => (Class::Procedural, "CALL".into()),
        NodeEnum::CreateFunctionStmt(f) => {
            let command = if f.is_procedure {
                "CREATE PROCEDURE"
            } else {
                "CREATE FUNCTION"
            };
            let language = f
                .options
                .iter()
                .find_map(|o| match &o.node {
                    Some(NodeEnum::DefElem(d)) if d.defname == "language" => Some(string_arg(d)),
                    _ => None,
                })
                .unwrap_or(if f.sql_body.is_some() {
                    Some("sql")
                } else {
                    None
                });
            match language {
                Some(l) if TRUSTED_LANGUAGES.contains(&l) => (Class::Ddl, command.into()),
                _ => (Class::Procedural, command.into()),
            }
        }

        // Ddl.
        NodeEnum::CreateStmt(_) => (Class::Ddl, "CREATE TABLE".into()),
        NodeEnum::CreateTableAsStmt(c) => {
            let command = if c.objtype == ObjectType::ObjectMatview as i32 {
                "CREATE MATERIALIZED VIEW"
            } else if c.is_select_into {
                "SELECT INTO"
            } else {
                "CREATE TABLE AS"
            };
            (Class::Ddl, command.into())
        }
        NodeEnum::ViewStmt(_) => (Class::Ddl, "CREATE VIEW".into()),
        NodeEnum::IndexStmt(_) => (Class::Ddl, "CREATE INDEX".into()),
        NodeEnum::CreateSeqStmt(_) => (Class::Ddl, "CREATE SEQUENCE".into()),
        NodeEnum::AlterSeqStmt(_) => (Class::Ddl, "ALTER SEQUENCE".into()),
        NodeEnum::CreateSchemaStmt(s) => {
            // Its elements may include GRANT, which makes it a privilege change.
            let grants = s
                .schema_elts
                .iter()
                .any(|e| matches!(e.node, Some(NodeEnum::GrantStmt(_))));
            (
                if grants { Class::Dcl } else { Class::Ddl },
                "CREATE SCHEMA".into(),
            )
        }
        NodeEnum::AlterTableStmt(a) => {
            let privileged = a.cmds.iter().any(|c| match &c.node {
                Some(NodeEnum::AlterTableCmd(c)) => matches!(
                    AlterTableType::try_from(c.subtype),
                    Ok(AlterTableType::AtChangeOwner
                        | AlterTableType::AtEnableRowSecurity
                        | AlterTableType::AtDisableRowSecurity
                        | AlterTableType::AtForceRowSecurity
                        | AlterTableType::AtNoForceRowSecurity)
                ),
                _ => false,
            });
            let class = if privileged { Class::Dcl } else { Class::Ddl };
            (class, format!("ALTER {}", object_name(a.objtype)).into())
        }
        NodeEnum::AlterTableMoveAllStmt(_) => (Class::Ddl, "ALTER TABLE ALL IN TABLESPACE".into()),
        NodeEnum::TruncateStmt(_) => (Class::Ddl, "TRUNCATE".into()),
        NodeEnum::CommentStmt(_) => (Class::Ddl, "COMMENT".into()),
        NodeEnum::SecLabelStmt(_) => (Class::Ddl, "SECURITY LABEL".into()),
        NodeEnum::RefreshMatViewStmt(_) => (Class::Ddl, "REFRESH MATERIALIZED VIEW".into()),
        NodeEnum::RuleStmt(_) => (Class::Ddl, "CREATE RULE".into()),
        NodeEnum::CreateTrigStmt(t) => (
            Class::Ddl,
            if t.isconstraint {
                "CREATE CONSTRAINT TRIGGER"
            } else {
                "CREATE TRIGGER"
            }
            .into(),
        ),
        NodeEnum::AlterFunctionStmt(f) => (
            Class::Ddl,
            format!("ALTER {}", object_name(f.objtype)).into(),
        ),
        NodeEnum::DropStmt(d) => {
            if RELATION_KINDS.iter().any(|k| *k as i32 == d.remove_type) {
                for object in &d.objects {
                    let parts = name_parts(object);
                    // `catalog.schema.name`: the catalog must be the current database.
                    let keep = parts.len().saturating_sub(2);
                    if !parts.is_empty() {
                        st.tables.push(parts[keep..].join("."));
                    }
                }
                st.tables.sort_unstable();
                st.tables.dedup();
            }
            (
                object_class(d.remove_type),
                format!("DROP {}", object_name(d.remove_type)).into(),
            )
        }
        NodeEnum::RenameStmt(r) => {
            let renamed = match ObjectType::try_from(r.rename_type) {
                Ok(
                    ObjectType::ObjectColumn
                    | ObjectType::ObjectAttribute
                    | ObjectType::ObjectTabconstraint,
                ) => r.relation_type,
                _ => r.rename_type,
            };
            (
                object_class(r.rename_type),
                format!("ALTER {} RENAME", object_name(renamed)).into(),
            )
        }
        NodeEnum::AlterObjectSchemaStmt(a) => (
            object_class(a.object_type),
            format!("ALTER {} SET SCHEMA", object_name(a.object_type)).into(),
        ),
        NodeEnum::AlterObjectDependsStmt(a) => (
            Class::Ddl,
            format!("ALTER {} DEPENDS ON EXTENSION", object_name(a.object_type)).into(),
        ),
        NodeEnum::DefineStmt(d) => (Class::Ddl, format!("CREATE {}", object_name(d.kind)).into()),
        NodeEnum::CreateDomainStmt(_) => (Class::Ddl, "CREATE DOMAIN".into()),
        NodeEnum::AlterDomainStmt(_) => (Class::Ddl, "ALTER DOMAIN".into()),
        NodeEnum::CompositeTypeStmt(_)
        | NodeEnum::CreateEnumStmt(_)
        | NodeEnum::CreateRangeStmt(_) => (Class::Ddl, "CREATE TYPE".into()),
        NodeEnum::AlterEnumStmt(_) | NodeEnum::AlterTypeStmt(_) => {
            (Class::Ddl, "ALTER TYPE".into())
        }
        NodeEnum::AlterCollationStmt(_) => (Class::Ddl, "ALTER COLLATION".into()),
        NodeEnum::CreateOpClassStmt(_) => (Class::Ddl, "CREATE OPERATOR CLASS".into()),
        NodeEnum::CreateOpFamilyStmt(_) => (Class::Ddl, "CREATE OPERATOR FAMILY".into()),
        NodeEnum::AlterOpFamilyStmt(_) => (Class::Ddl, "ALTER OPERATOR FAMILY".into()),
        NodeEnum::AlterOperatorStmt(_) => (Class::Ddl, "ALTER OPERATOR".into()),
        NodeEnum::CreateStatsStmt(_) => (Class::Ddl, "CREATE STATISTICS".into()),
        NodeEnum::AlterStatsStmt(_) => (Class::Ddl, "ALTER STATISTICS".into()),
        NodeEnum::CreateAmStmt(_) => (Class::Ddl, "CREATE ACCESS METHOD".into()),
        NodeEnum::CreateCastStmt(_) => (Class::Ddl, "CREATE CAST".into()),
        NodeEnum::CreateConversionStmt(_) => (Class::Ddl, "CREATE CONVERSION".into()),
        NodeEnum::CreateTransformStmt(_) => (Class::Ddl, "CREATE TRANSFORM".into()),
        NodeEnum::AlterTsdictionaryStmt(_) => (Class::Ddl, "ALTER TEXT SEARCH DICTIONARY".into()),
        NodeEnum::AlterTsconfigurationStmt(_) => {
            (Class::Ddl, "ALTER TEXT SEARCH CONFIGURATION".into())
        }
        NodeEnum::CreateForeignTableStmt(_) => (Class::Ddl, "CREATE FOREIGN TABLE".into()),
        NodeEnum::CreateForeignServerStmt(_) => (Class::Ddl, "CREATE SERVER".into()),
        NodeEnum::AlterForeignServerStmt(_) => (Class::Ddl, "ALTER SERVER".into()),
        NodeEnum::CreateUserMappingStmt(_) => (Class::Ddl, "CREATE USER MAPPING".into()),
        NodeEnum::AlterUserMappingStmt(_) => (Class::Ddl, "ALTER USER MAPPING".into()),
        NodeEnum::DropUserMappingStmt(_) => (Class::Ddl, "DROP USER MAPPING".into()),
        NodeEnum::ImportForeignSchemaStmt(_) => (Class::Ddl, "IMPORT FOREIGN SCHEMA".into()),
        NodeEnum::CreatePublicationStmt(_) => (Class::Ddl, "CREATE PUBLICATION".into()),
        NodeEnum::AlterPublicationStmt(_) => (Class::Ddl, "ALTER PUBLICATION".into()),

        // Dcl.
        NodeEnum::GrantStmt(g) => (
            Class::Dcl,
            if g.is_grant { "GRANT" } else { "REVOKE" }.into(),
        ),
        NodeEnum::GrantRoleStmt(g) => (
            Class::Dcl,
            if g.is_grant {
                "GRANT ROLE"
            } else {
                "REVOKE ROLE"
            }
            .into(),
        ),
        NodeEnum::AlterDefaultPrivilegesStmt(_) => (Class::Dcl, "ALTER DEFAULT PRIVILEGES".into()),
        NodeEnum::CreateRoleStmt(r) => {
            let command = match RoleStmtType::try_from(r.stmt_type) {
                Ok(RoleStmtType::RolestmtUser) => "CREATE USER",
                Ok(RoleStmtType::RolestmtGroup) => "CREATE GROUP",
                _ => "CREATE ROLE",
            };
            (Class::Dcl, command.into())
        }
        NodeEnum::AlterRoleStmt(_) => (Class::Dcl, "ALTER ROLE".into()),
        NodeEnum::AlterRoleSetStmt(_) => (Class::Dcl, "ALTER ROLE SET".into()),
        NodeEnum::DropRoleStmt(_) => (Class::Dcl, "DROP ROLE".into()),
        NodeEnum::DropOwnedStmt(_) => (Class::Dcl, "DROP OWNED".into()),
        NodeEnum::ReassignOwnedStmt(_) => (Class::Dcl, "REASSIGN OWNED".into()),
        NodeEnum::AlterOwnerStmt(a) => (
            Class::Dcl,
            format!("ALTER {} OWNER", object_name(a.object_type)).into(),
        ),
        NodeEnum::CreatePolicyStmt(_) => (Class::Dcl, "CREATE POLICY".into()),
        NodeEnum::AlterPolicyStmt(_) => (Class::Dcl, "ALTER POLICY".into()),

        // Admin.
        NodeEnum::VacuumStmt(v) => (
            Class::Admin,
            if v.is_vacuumcmd { "VACUUM" } else { "ANALYZE" }.into(),
        ),
        NodeEnum::ClusterStmt(_) => (Class::Admin, "CLUSTER".into()),
        NodeEnum::ReindexStmt(_) => (Class::Admin, "REINDEX".into()),
        NodeEnum::CheckPointStmt(_) => (Class::Admin, "CHECKPOINT".into()),
        NodeEnum::LoadStmt(_) => (Class::Admin, "LOAD".into()),
        NodeEnum::AlterSystemStmt(_) => (Class::Admin, "ALTER SYSTEM".into()),
        NodeEnum::CreatedbStmt(_) => (Class::Admin, "CREATE DATABASE".into()),
        NodeEnum::AlterDatabaseStmt(_) | NodeEnum::AlterDatabaseRefreshCollStmt(_) => {
            (Class::Admin, "ALTER DATABASE".into())
        }
        NodeEnum::AlterDatabaseSetStmt(_) => (Class::Admin, "ALTER DATABASE SET".into()),
        NodeEnum::DropdbStmt(_) => (Class::Admin, "DROP DATABASE".into()),
        NodeEnum::CreateTableSpaceStmt(_) => (Class::Admin, "CREATE TABLESPACE".into()),
        NodeEnum::DropTableSpaceStmt(_) => (Class::Admin, "DROP TABLESPACE".into()),
        NodeEnum::AlterTableSpaceOptionsStmt(_) => (Class::Admin, "ALTER TABLESPACE".into()),
        NodeEnum::CreateExtensionStmt(_) => (Class::Admin, "CREATE EXTENSION".into()),
        NodeEnum::AlterExtensionStmt(_) | NodeEnum::AlterExtensionContentsStmt(_) => {
            (Class::Admin, "ALTER EXTENSION".into())
        }
        NodeEnum::CreatePlangStmt(_) => (Class::Admin, "CREATE LANGUAGE".into()),
        NodeEnum::CreateFdwStmt(_) => (Class::Admin, "CREATE FOREIGN DATA WRAPPER".into()),
        NodeEnum::AlterFdwStmt(_) => (Class::Admin, "ALTER FOREIGN DATA WRAPPER".into()),
        NodeEnum::CreateSubscriptionStmt(_) => (Class::Admin, "CREATE SUBSCRIPTION".into()),
        NodeEnum::AlterSubscriptionStmt(_) => (Class::Admin, "ALTER SUBSCRIPTION".into()),
        NodeEnum::DropSubscriptionStmt(_) => (Class::Admin, "DROP SUBSCRIPTION".into()),
        NodeEnum::CreateEventTrigStmt(_) => (Class::Admin, "CREATE EVENT TRIGGER".into()),
        NodeEnum::AlterEventTrigStmt(_) => (Class::Admin, "ALTER EVENT TRIGGER".into()),

        _ => (Class::Unknown, root.to_ascii_uppercase().into()),
    };
    st.class = class;
    st.command = command.into_owned();
    if class == Class::Unknown {
        st.reason = Some(format!("statement type {} is not classified", root));
    }
    st
}

/// `SET` / `RESET` and their special forms.
fn set_class(v: &protobuf::VariableSetStmt) -> (Class, std::borrow::Cow<'static, str>) {
    let kind = VariableSetKind::try_from(v.kind);
    let verb = match kind {
        Ok(VariableSetKind::VarReset | VariableSetKind::VarResetAll) => "RESET",
        _ => "SET",
    };
    match kind {
        Ok(VariableSetKind::VarSetMulti) => match v.name.as_str() {
            "TRANSACTION" if read_write(&v.args) => (Class::Admin, "SET TRANSACTION".into()),
            "TRANSACTION" => (Class::Transaction, "SET TRANSACTION".into()),
            "TRANSACTION SNAPSHOT" => (Class::Transaction, "SET TRANSACTION SNAPSHOT".into()),
            "SESSION CHARACTERISTICS" if read_write(&v.args) => {
                (Class::Admin, "SET SESSION CHARACTERISTICS".into())
            }
            "SESSION CHARACTERISTICS" => (Class::Session, "SET SESSION CHARACTERISTICS".into()),
            _ => (Class::Unknown, "SET".into()),
        },
        Ok(VariableSetKind::VarResetAll) => (Class::Session, "RESET ALL".into()),
        Ok(
            VariableSetKind::VarSetValue
            | VariableSetKind::VarSetDefault
            | VariableSetKind::VarSetCurrent
            | VariableSetKind::VarReset,
        ) => {
            let name = v.name.to_ascii_lowercase();
            match name.as_str() {
                "role" => (Class::Dcl, format!("{verb} ROLE").into()),
                "session_authorization" => {
                    (Class::Dcl, format!("{verb} SESSION AUTHORIZATION").into())
                }
                _ if is_dangerous_setting(&name) => (Class::Admin, verb.into()),
                _ => (Class::Session, verb.into()),
            }
        }
        _ => (Class::Unknown, verb.into()),
    }
}

/// `BEGIN`, `COMMIT`, ... by kind.
fn transaction_class(t: &protobuf::TransactionStmt) -> (Class, std::borrow::Cow<'static, str>) {
    let command = match TransactionStmtKind::try_from(t.kind) {
        Ok(TransactionStmtKind::TransStmtBegin) => "BEGIN",
        Ok(TransactionStmtKind::TransStmtStart) => "START TRANSACTION",
        Ok(TransactionStmtKind::TransStmtCommit) => "COMMIT",
        Ok(TransactionStmtKind::TransStmtRollback) => "ROLLBACK",
        Ok(TransactionStmtKind::TransStmtSavepoint) => "SAVEPOINT",
        Ok(TransactionStmtKind::TransStmtRelease) => "RELEASE",
        Ok(TransactionStmtKind::TransStmtRollbackTo) => "ROLLBACK TO SAVEPOINT",
        Ok(TransactionStmtKind::TransStmtPrepare) => "PREPARE TRANSACTION",
        Ok(TransactionStmtKind::TransStmtCommitPrepared) => "COMMIT PREPARED",
        Ok(TransactionStmtKind::TransStmtRollbackPrepared) => "ROLLBACK PREPARED",
        _ => return (Class::Unknown, "TRANSACTION".into()),
    };
    let class = if read_write(&t.options) {
        Class::Admin
    } else {
        Class::Transaction
    };
    (class, command.into())
}

/// Whether transaction modes (`BEGIN …`, `SET TRANSACTION …`) ask for `READ WRITE`. The
/// grammar turns `READ ONLY` / `READ WRITE` into `transaction_read_only` = 1 / 0, an
/// integer it makes itself (never one the client wrote); anything but a plain 1 counts as
/// read-write.
fn read_write(modes: &[protobuf::Node]) -> bool {
    modes.iter().any(|m| match &m.node {
        Some(NodeEnum::DefElem(d)) if d.defname == "transaction_read_only" => !matches!(
            d.arg.as_deref().and_then(|a| a.node.as_ref()),
            Some(NodeEnum::AConst(protobuf::AConst {
                val: Some(protobuf::a_const::Val::Ival(protobuf::Integer { ival: 1 })),
                ..
            }))
        ),
        _ => false,
    })
}

/// The name of a `DefElem` option node.
fn defname(node: &protobuf::Node) -> Option<&str> {
    match &node.node {
        Some(NodeEnum::DefElem(d)) => Some(&d.defname),
        _ => None,
    }
}

/// The identifier or string argument of a `DefElem` (`LANGUAGE plpgsql`).
fn string_arg(d: &protobuf::DefElem) -> Option<&str> {
    match d.arg.as_deref().and_then(|a| a.node.as_ref()) {
        Some(NodeEnum::String(s)) => Some(&s.sval),
        _ => None,
    }
}

/// The strings of a name given as a list of `String` nodes (`schema.table`).
fn name_parts(node: &protobuf::Node) -> Vec<&str> {
    match &node.node {
        Some(NodeEnum::List(l)) => l
            .items
            .iter()
            .filter_map(|i| match &i.node {
                Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                _ => None,
            })
            .collect(),
        Some(NodeEnum::String(s)) => vec![s.sval.as_str()],
        _ => Vec::new(),
    }
}

/// Object kinds whose `DROP` lists them in [`Statement::tables`]: relations that hold or
/// present rows.
const RELATION_KINDS: [ObjectType; 5] = [
    ObjectType::ObjectTable,
    ObjectType::ObjectView,
    ObjectType::ObjectMatview,
    ObjectType::ObjectForeignTable,
    ObjectType::ObjectSequence,
];

/// The class of creating, renaming, moving or dropping an object of this kind.
fn object_class(object_type: i32) -> Class {
    match ObjectType::try_from(object_type) {
        Ok(
            ObjectType::ObjectDatabase
            | ObjectType::ObjectTablespace
            | ObjectType::ObjectExtension
            | ObjectType::ObjectLanguage
            | ObjectType::ObjectFdw
            | ObjectType::ObjectSubscription
            | ObjectType::ObjectEventTrigger,
        ) => Class::Admin,
        Ok(ObjectType::ObjectRole | ObjectType::ObjectPolicy) => Class::Dcl,
        _ => Class::Ddl,
    }
}

/// An object kind as SQL spells it, for commands.
fn object_name(object_type: i32) -> &'static str {
    use ObjectType as O;
    match O::try_from(object_type) {
        Ok(O::ObjectAccessMethod) => "ACCESS METHOD",
        Ok(O::ObjectAggregate) => "AGGREGATE",
        Ok(O::ObjectAmop) => "OPERATOR FAMILY OPERATOR",
        Ok(O::ObjectAmproc) => "OPERATOR FAMILY FUNCTION",
        Ok(O::ObjectAttribute) => "ATTRIBUTE",
        Ok(O::ObjectCast) => "CAST",
        Ok(O::ObjectColumn) => "COLUMN",
        Ok(O::ObjectCollation) => "COLLATION",
        Ok(O::ObjectConversion) => "CONVERSION",
        Ok(O::ObjectDatabase) => "DATABASE",
        Ok(O::ObjectDefault) => "DEFAULT",
        Ok(O::ObjectDefacl) => "DEFAULT PRIVILEGES",
        Ok(O::ObjectDomain) => "DOMAIN",
        Ok(O::ObjectDomconstraint) => "DOMAIN CONSTRAINT",
        Ok(O::ObjectEventTrigger) => "EVENT TRIGGER",
        Ok(O::ObjectExtension) => "EXTENSION",
        Ok(O::ObjectFdw) => "FOREIGN DATA WRAPPER",
        Ok(O::ObjectForeignServer) => "SERVER",
        Ok(O::ObjectForeignTable) => "FOREIGN TABLE",
        Ok(O::ObjectFunction) => "FUNCTION",
        Ok(O::ObjectIndex) => "INDEX",
        Ok(O::ObjectLanguage) => "LANGUAGE",
        Ok(O::ObjectLargeobject) => "LARGE OBJECT",
        Ok(O::ObjectMatview) => "MATERIALIZED VIEW",
        Ok(O::ObjectOpclass) => "OPERATOR CLASS",
        Ok(O::ObjectOperator) => "OPERATOR",
        Ok(O::ObjectOpfamily) => "OPERATOR FAMILY",
        Ok(O::ObjectParameterAcl) => "PARAMETER",
        Ok(O::ObjectPolicy) => "POLICY",
        Ok(O::ObjectProcedure) => "PROCEDURE",
        Ok(O::ObjectPublication) => "PUBLICATION",
        Ok(O::ObjectPublicationNamespace) => "PUBLICATION SCHEMA",
        Ok(O::ObjectPublicationRel) => "PUBLICATION TABLE",
        Ok(O::ObjectRole) => "ROLE",
        Ok(O::ObjectRoutine) => "ROUTINE",
        Ok(O::ObjectRule) => "RULE",
        Ok(O::ObjectSchema) => "SCHEMA",
        Ok(O::ObjectSequence) => "SEQUENCE",
        Ok(O::ObjectSubscription) => "SUBSCRIPTION",
        Ok(O::ObjectStatisticExt) => "STATISTICS",
        Ok(O::ObjectTabconstraint) => "CONSTRAINT",
        Ok(O::ObjectTable) => "TABLE",
        Ok(O::ObjectTablespace) => "TABLESPACE",
        Ok(O::ObjectTransform) => "TRANSFORM",
        Ok(O::ObjectTrigger) => "TRIGGER",
        Ok(O::ObjectTsconfiguration) => "TEXT SEARCH CONFIGURATION",
        Ok(O::ObjectTsdictionary) => "TEXT SEARCH DICTIONARY",
        Ok(O::ObjectTsparser) => "TEXT SEARCH PARSER",
        Ok(O::ObjectTstemplate) => "TEXT SEARCH TEMPLATE",
        Ok(O::ObjectType) => "TYPE",
        Ok(O::ObjectUserMapping) => "USER MAPPING",
        Ok(O::ObjectView) => "VIEW",
        Ok(O::Undefined) | Err(_) => "OBJECT",
    }
}

// ---------------------------------------------------------------------------------------
// The generic walk.

/// What a walk over a statement's whole tree found.
struct Facts {
    /// The top node's type, as `pg_query` names it (`SelectStmt`).
    root: &'static str,
    flags: Flags,
    tables: Vec<String>,
    functions: Vec<String>,
    /// `INSERT` / `UPDATE` / `DELETE` / `MERGE` nodes anywhere, the top one included.
    writes: usize,
    /// `INTO` clauses anywhere (`SELECT … INTO` keeps it in the leftmost leaf of a set
    /// operation, not in the top node).
    into_clauses: usize,
}

impl Facts {
    fn collect(node: &NodeEnum) -> Facts {
        let mut walk = Walk::default();
        // The walk itself cannot fail: every serializer method returns `Ok`.
        let _ = node.serialize(&mut walk);
        let mut flags = Flags::default();
        if walk.no_where {
            flags.insert(Flag::NoWhere);
        }
        if walk.row_lock {
            flags.insert(Flag::RowLock);
        }
        let mut tables: Vec<String> = Vec::with_capacity(walk.relations.len());
        for r in &walk.relations {
            if r.schema.is_empty() && !r.target && walk.is_cte(&r.name, &r.path) {
                continue;
            }
            tables.push(if r.schema.is_empty() {
                r.name.clone()
            } else {
                format!("{}.{}", r.schema, r.name)
            });
        }
        tables.sort_unstable();
        tables.dedup();
        let mut functions = walk.functions;
        functions.sort_unstable();
        functions.dedup();
        Facts {
            root: walk.root,
            flags,
            tables,
            functions,
            writes: walk.writes,
            into_clauses: walk.into_clauses,
        }
    }
}

/// Node types that carry a `WITH` clause and so open a scope for CTE names.
const SCOPES: [&str; 5] = [
    "SelectStmt",
    "InsertStmt",
    "UpdateStmt",
    "DeleteStmt",
    "MergeStmt",
];
/// Node types that modify data.
const WRITES: [&str; 4] = ["InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"];

/// A `serde::Serializer` that serializes nothing: it visits a `pg_query` parse tree through
/// its derived `Serialize` implementations and records what [`Facts`] needs. Structs are
/// tracked on a stack of frames (type name and the field being visited), which is all the
/// context the facts need.
#[derive(Default)]
struct Walk {
    root: &'static str,
    frames: Vec<Frame>,
    /// `WITH` scopes, indexed by id.
    scopes: Vec<Scope>,
    /// The scopes enclosing the current node, outermost first, each with the CTE being
    /// visited (`None`: the statement body).
    path: Vec<(usize, Option<usize>)>,
    relations: Vec<Relation>,
    functions: Vec<String>,
    writes: usize,
    into_clauses: usize,
    no_where: bool,
    row_lock: bool,
}

struct Frame {
    name: &'static str,
    field: &'static str,
    /// `RangeVar`: schema; `FuncCall`: the dotted name.
    a: String,
    /// `RangeVar`: relation name.
    b: String,
    /// A `CommonTableExpr` of the innermost scope's `WITH`.
    cte: bool,
}

#[derive(Default)]
struct Scope {
    ctes: Vec<String>,
    recursive: bool,
}

struct Relation {
    schema: String,
    name: String,
    /// The target of `INSERT` / `UPDATE` / `DELETE` / `MERGE` / `INTO`: always a table,
    /// never a CTE.
    target: bool,
    path: Vec<(usize, Option<usize>)>,
}

impl Walk {
    /// Whether an unqualified relation name at `path` refers to a CTE: a non-recursive
    /// `WITH` makes a CTE visible to the statement body and to the CTEs after it; a
    /// `RECURSIVE` one to all of its CTEs.
    fn is_cte(&self, name: &str, path: &[(usize, Option<usize>)]) -> bool {
        path.iter().rev().any(|&(id, at)| {
            let scope = &self.scopes[id];
            let visible = match at {
                Some(k) if !scope.recursive => &scope.ctes[..k],
                _ => &scope.ctes[..],
            };
            visible.iter().any(|c| c == name)
        })
    }

    /// The frame `up` levels below the top (0 = top).
    fn frame(&self, up: usize) -> Option<&Frame> {
        self.frames
            .len()
            .checked_sub(up + 1)
            .map(|i| &self.frames[i])
    }

    fn at(&self, up: usize, name: &str, field: &str) -> bool {
        self.frame(up)
            .is_some_and(|f| f.name == name && f.field == field)
    }

    fn begin_struct(&mut self, name: &'static str) {
        if WRITES.contains(&name) {
            self.writes += 1;
        }
        match name {
            "LockingClause" => self.row_lock = true,
            "IntoClause" => self.into_clauses += 1,
            _ => {}
        }
        // A CTE of a WITH: Stmt(with_clause) > WithClause(ctes) > Node(node) > CTE.
        let cte = name == "CommonTableExpr"
            && self.at(0, "Node", "node")
            && self.at(1, "WithClause", "ctes")
            && self
                .frame(2)
                .is_some_and(|f| SCOPES.contains(&f.name) && f.field == "with_clause");
        if cte {
            if let Some(&(id, _)) = self.path.last() {
                let k = self.scopes[id].ctes.len();
                self.scopes[id].ctes.push(String::new());
                if let Some(top) = self.path.last_mut() {
                    top.1 = Some(k);
                }
            }
        }
        self.frames.push(Frame {
            name,
            field: "",
            a: String::new(),
            b: String::new(),
            cte,
        });
        if SCOPES.contains(&name) {
            self.scopes.push(Scope::default());
            self.path.push((self.scopes.len() - 1, None));
        }
    }

    fn end_struct(&mut self) {
        let Some(frame) = self.frames.pop() else {
            return;
        };
        match frame.name {
            "RangeVar" if !frame.b.is_empty() => {
                let target = self.frame(0).is_some_and(|p| {
                    (WRITES.contains(&p.name) && p.field == "relation")
                        || (p.name == "IntoClause" && p.field == "rel")
                });
                let path = if frame.a.is_empty() && !target {
                    self.path.clone()
                } else {
                    Vec::new()
                };
                self.relations.push(Relation {
                    schema: frame.a,
                    name: frame.b,
                    target,
                    path,
                });
            }
            "FuncCall" if !frame.a.is_empty() => self.functions.push(frame.a),
            _ => {}
        }
        if frame.cte {
            if let Some(top) = self.path.last_mut() {
                top.1 = None;
            }
        }
        if SCOPES.contains(&frame.name) {
            self.path.pop();
        }
    }

    fn visit_str(&mut self, v: &str) {
        let Some(top) = self.frames.last() else {
            return;
        };
        match (top.name, top.field) {
            ("RangeVar", "schemaname") | ("RangeVar", "relname") => {
                let is_schema = top.field == "schemaname";
                if let Some(top) = self.frames.last_mut() {
                    if is_schema {
                        top.a = v.to_owned();
                    } else {
                        top.b = v.to_owned();
                    }
                }
            }
            ("CommonTableExpr", "ctename") if top.cte => {
                if let Some(&(id, Some(k))) = self.path.last() {
                    self.scopes[id].ctes[k] = v.to_owned();
                }
            }
            // FuncCall(funcname) > Node(node) > String(sval)
            ("String", "sval")
                if self.at(1, "Node", "node") && self.at(2, "FuncCall", "funcname") =>
            {
                let n = self.frames.len();
                let name = &mut self.frames[n - 3].a;
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(v);
            }
            _ => {}
        }
    }

    fn visit_bool(&mut self, v: bool) {
        if self.at(0, "WithClause", "recursive")
            && self.frame(1).is_some_and(|f| SCOPES.contains(&f.name))
        {
            if let Some(&(id, _)) = self.path.last() {
                self.scopes[id].recursive = v;
            }
        }
    }

    fn visit_none(&mut self) {
        if self.at(0, "UpdateStmt", "where_clause") || self.at(0, "DeleteStmt", "where_clause") {
            self.no_where = true;
        }
    }
}

/// The walk's error type; never produced.
#[derive(Debug)]
struct Never;

impl fmt::Display for Never {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("parse tree walk failed")
    }
}

impl std::error::Error for Never {}

impl ser::Error for Never {
    fn custom<T: fmt::Display>(_msg: T) -> Never {
        Never
    }
}

type R = Result<(), Never>;

impl ser::Serializer for &mut Walk {
    type Ok = ();
    type Error = Never;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> R {
        self.visit_bool(v);
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> R {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> R {
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> R {
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> R {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> R {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> R {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> R {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> R {
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> R {
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> R {
        Ok(())
    }
    fn serialize_char(self, _: char) -> R {
        Ok(())
    }
    fn serialize_str(self, v: &str) -> R {
        self.visit_str(v);
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> R {
        Ok(())
    }
    fn serialize_none(self) -> R {
        self.visit_none();
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> R {
        if self.root.is_empty() {
            self.root = variant;
        }
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Self, Never> {
        self.begin_struct(name);
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Never> {
        self.begin_struct(name);
        Ok(self)
    }
}

impl ser::SerializeSeq for &mut Walk {
    type Ok = ();
    type Error = Never;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTuple for &mut Walk {
    type Ok = ();
    type Error = Never;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for &mut Walk {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for &mut Walk {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeMap for &mut Walk {
    type Ok = ();
    type Error = Never;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> R {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Walk {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> R {
        if let Some(top) = self.frames.last_mut() {
            top.field = key;
        }
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        self.end_struct();
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut Walk {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> R {
        if let Some(top) = self.frames.last_mut() {
            top.field = key;
        }
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        self.end_struct();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        let mut v = analyze(sql);
        assert_eq!(v.len(), 1, "{sql}: {v:?}");
        v.remove(0)
    }

    #[test]
    fn cte_names_are_scoped() {
        // The CTE's own body reads the real table of the same name (not recursive).
        let s = one("with orders as (select * from orders) select * from orders");
        assert_eq!(s.tables, ["orders"]);
        // A CTE defined in a subquery does not hide the outer table.
        let s = one("select * from t, (with t as (select 0) select * from t) x");
        assert_eq!(s.tables, ["t"]);
        let s = one("with a as (select 0) select * from a, b");
        assert_eq!(s.tables, ["b"]);
        // Later CTEs see earlier ones; earlier ones do not see later ones.
        let s = one("with a as (select * from b), b as (select * from a) select * from b");
        assert_eq!(s.tables, ["b"]);
        let s = one("with recursive r as (select 0 union all select * from r) select * from r");
        assert!(s.tables.is_empty(), "{s:?}");
        // The WITH of a set operation covers both sides; MERGE sources may be CTEs.
        let s = one("with a as (select * from t) select * from a union select * from a");
        assert_eq!(s.tables, ["t"]);
        let s = one("with s as (select 0 as id) merge into t using s on t.id = s.id when matched then delete");
        assert_eq!(s.tables, ["t"]);
        // Qualified names and DML targets are always tables.
        let s = one("with t as (select 0) insert into t select * from public.t");
        assert_eq!(s.tables, ["public.t", "t"]);
    }

    #[test]
    fn nested_writes_and_flags() {
        let s = one("with d as (delete from t returning *) select * from d");
        assert_eq!(
            (s.class, s.flags.contains(Flag::NoWhere)),
            (Class::Write, true)
        );
        assert_eq!(s.tables, ["t"]);
        let s = one("select * from a union select * from b for update");
        assert_eq!(s.class, Class::Read);
        assert!(s.flags.contains(Flag::RowLock));
        let s = one("select * into x from a union select * from b");
        assert_eq!(s.class, Class::Ddl);
        let s = one("delete from t where current of c");
        assert!(!s.flags.contains(Flag::NoWhere));
    }

    #[test]
    fn functions_are_dotted() {
        let s = one("select pg_catalog.set_config('?', '?', false), lower(upper(x)) from t");
        assert_eq!(s.functions, ["lower", "pg_catalog.set_config", "upper"]);
    }

    #[test]
    fn parse_failure_is_one_unknown() {
        let v = analyze("select from where; select 0");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].class, Class::Unknown);
        assert!(
            v[0].reason.as_deref().unwrap().contains("syntax error"),
            "{v:?}"
        );
    }

    #[test]
    fn dangerous_settings() {
        assert!(is_dangerous_setting("LOG_statement"));
        assert!(is_dangerous_setting("pgaudit.log"));
        assert!(!is_dangerous_setting("search_path"));
        assert!(!is_dangerous_setting("statement_timeout"));
    }
}
