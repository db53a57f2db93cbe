//! PostgreSQL test clusters (being written).
