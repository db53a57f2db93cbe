//! PostgreSQL wire codecs (being written).
