//! The synthetic `shop` database used by `sluice demo` and the masking tests.
//!
//! Everything is generated server-side in one psql call from a deterministic
//! integer hash (`demo.rnd(i, salt)`), so every run produces byte-identical
//! data. The helper functions stay in schema `demo` of database `shop`:
//! `demo.rnd`, `demo.luhn_check_digit(text)` and `demo.luhn_valid(text)`.
//!
//! * `customers(id, full_name, email, phone, card_number, ssn, notes)`:
//!   10,000 rows. Card numbers are 16 Luhn-valid digits with Visa (`4`) or
//!   Mastercard (`51`–`55`, `2221`–`2720`) prefixes, 70 % plain digits,
//!   20 % grouped with spaces, 10 % with dashes. SSNs are `AAA-GG-SSSS` with
//!   area 001–665/667–899, group 01–99, serial 0001–9999. Phones look like
//!   `+1-415-555-0142` (the fictional 555-01xx range). About a third of
//!   the notes mention the customer's email, card number or phone.
//! * `orders(id, customer_id, amount, created_at)`: 50,000 rows in 2023–2024.

use anyhow::{Context, Result};

use crate::PgCluster;

/// Number of rows in `shop.customers`.
pub const CUSTOMERS: u64 = 10_000;
/// Number of rows in `shop.orders`.
pub const ORDERS: u64 = 50_000;

/// (Re)creates database `shop` (owned by the superuser) with deterministic
/// customers and orders, then `ANALYZE`s it. Drops an existing `shop`.
pub fn seed_shop(cluster: &PgCluster) -> Result<()> {
    let script = format!(
        "DROP DATABASE IF EXISTS shop WITH (FORCE);\nCREATE DATABASE shop;\n\\connect shop\n{SHOP_SQL}"
    );
    cluster
        .psql("postgres", &script)
        .context("seeding the shop database failed")?;
    Ok(())
}

/// Creates the shop's schema `demo`, `customers` and `orders` (with their data) in an
/// existing `database`, owned by the superuser and readable by `reader`.
pub fn seed_shop_tables(cluster: &PgCluster, database: &str, reader: &str) -> Result<()> {
    let script = format!(
        "{SHOP_SQL}\nGRANT USAGE ON SCHEMA demo TO {reader};\nGRANT ALL ON ALL TABLES IN SCHEMA public TO {reader};\nGRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA demo TO {reader};\n"
    );
    cluster
        .psql(database, &script)
        .with_context(|| format!("seeding the shop tables into {database} failed"))?;
    Ok(())
}

/// The psql script that creates and fills the shop's tables in the current database
/// (run by [`seed_shop`] and [`seed_shop_tables`]).
pub const SHOP_SQL: &str = r#"
SET client_min_messages = warning;
BEGIN;
CREATE SCHEMA demo;

-- Deterministic 31-bit hash of (i, salt): xorshift-multiply mixing.
CREATE FUNCTION demo.rnd(i bigint, salt bigint) RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
  x bigint := ((i * 2654435761) # (salt * 40503 + 12345)) & 2147483647;
BEGIN
  x := x # (x >> 15);
  x := (x * 73244475) & 2147483647;
  x := x # (x >> 13);
  x := (x * 739982445) & 2147483647;
  x := x # (x >> 16);
  x := (x * 73244475) & 2147483647;
  RETURN x # (x >> 15);
END
$fn$;

-- Check digit that makes payload || digit pass the Luhn check.
CREATE FUNCTION demo.luhn_check_digit(payload text) RETURNS int
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
  total int := 0;
  d int;
  n int := length(payload);
BEGIN
  FOR k IN 1..n LOOP
    d := ascii(substr(payload, k, 1)) - 48;
    IF (n - k) % 2 = 0 THEN
      d := d * 2;
      IF d > 9 THEN d := d - 9; END IF;
    END IF;
    total := total + d;
  END LOOP;
  RETURN (10 - total % 10) % 10;
END
$fn$;

-- Luhn check of a card number; ignores spaces and dashes.
CREATE FUNCTION demo.luhn_valid(card text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
DECLARE
  digits text := translate(card, ' -', '');
  n int := length(digits);
BEGIN
  IF digits !~ '^[0-9]{12,19}$' THEN
    RETURN false;
  END IF;
  RETURN demo.luhn_check_digit(left(digits, n - 1)) = ascii(right(digits, 1)) - 48;
END
$fn$;

CREATE TABLE customers (
  id int PRIMARY KEY,
  full_name text,
  email text,
  phone text,
  card_number text,
  ssn text,
  notes text
);

CREATE TABLE orders (
  id int PRIMARY KEY,
  customer_id int REFERENCES customers,
  amount numeric(10,2),
  created_at timestamptz
);

INSERT INTO customers (id, full_name, email, phone, card_number, ssn, notes)
WITH words AS (
  SELECT
    ARRAY['James','Mary','Robert','Patricia','John','Jennifer','Michael','Linda',
          'David','Elizabeth','William','Barbara','Richard','Susan','Joseph','Jessica',
          'Thomas','Sarah','Charles','Karen','Daniel','Lisa','Matthew','Nancy',
          'Anthony','Sandra','Mark','Ashley','Steven','Emily','Andrew','Donna',
          'Paul','Michelle','Joshua','Carol','Kevin','Amanda','Brian','Melissa',
          'Omar','Aisha','Wei','Mei','Raj','Priya','Lars','Ingrid'] AS firsts,
    ARRAY['Smith','Johnson','Williams','Brown','Jones','Garcia','Miller','Davis',
          'Rodriguez','Martinez','Hernandez','Lopez','Gonzalez','Wilson','Anderson','Thomas',
          'Taylor','Moore','Jackson','Martin','Lee','Perez','Thompson','White',
          'Harris','Sanchez','Clark','Ramirez','Lewis','Robinson','Walker','Young',
          'Allen','King','Wright','Scott','Torres','Nguyen','Hill','Flores',
          'Green','Adams','Nelson','Baker','Hall','Rivera','Campbell','Mitchell'] AS lasts,
    ARRAY['example.com','example.org','example.net','mail.example.com'] AS domains
),
base AS MATERIALIZED (
  SELECT i,
    w.firsts[1 + demo.rnd(i, 1) % cardinality(w.firsts)] AS first_name,
    w.lasts[1 + demo.rnd(i, 2) % cardinality(w.lasts)] AS last_name,
    w.domains[1 + demo.rnd(i, 3) % cardinality(w.domains)] AS domain,
    CASE WHEN demo.rnd(i, 4) % 3 = 0 THEN (demo.rnd(i, 5) % 100)::text ELSE '' END AS email_suffix,
    '+1-' || (201 + demo.rnd(i, 6) % 798)::text || '-555-01'
      || lpad((demo.rnd(i, 7) % 100)::text, 2, '0') AS phone,
    CASE demo.rnd(i, 8) % 4
      WHEN 0 THEN '4'
      WHEN 1 THEN '4'
      WHEN 2 THEN (51 + demo.rnd(i, 9) % 5)::text
      ELSE (2221 + demo.rnd(i, 9) % 500)::text
    END AS card_prefix,
    lpad((demo.rnd(i, 10) % 100000)::text, 5, '0')
      || lpad((demo.rnd(i, 11) % 100000)::text, 5, '0')
      || lpad((demo.rnd(i, 18) % 100000)::text, 5, '0') AS card_random,
    demo.rnd(i, 12) % 10 AS card_style,
    (1 + demo.rnd(i, 13) % 898) AS ssn_area_raw,
    (1 + demo.rnd(i, 14) % 99) AS ssn_group,
    (1 + demo.rnd(i, 15) % 9999) AS ssn_serial,
    demo.rnd(i, 16) % 12 AS note_kind,
    2010 + demo.rnd(i, 17) % 14 AS since_year
  FROM generate_series(1, 10000) AS i, words AS w
),
cards AS (
  SELECT b.*,
    b.card_prefix || substr(b.card_random, 1, 15 - length(b.card_prefix)) AS card_payload
  FROM base AS b
),
digits AS MATERIALIZED (
  SELECT c.*, c.card_payload || demo.luhn_check_digit(c.card_payload)::text AS card_digits
  FROM cards AS c
),
formatted AS MATERIALIZED (
  SELECT d.*,
    d.first_name || ' ' || d.last_name AS full_name,
    lower(d.first_name) || '.' || lower(d.last_name) || d.email_suffix || '@' || d.domain AS email,
    CASE
      WHEN d.card_style < 7 THEN d.card_digits
      WHEN d.card_style < 9 THEN regexp_replace(d.card_digits, '^(\d{4})(\d{4})(\d{4})(\d{4})$', '\1 \2 \3 \4')
      ELSE regexp_replace(d.card_digits, '^(\d{4})(\d{4})(\d{4})(\d{4})$', '\1-\2-\3-\4')
    END AS card_number,
    lpad((CASE WHEN d.ssn_area_raw >= 666 THEN d.ssn_area_raw + 1 ELSE d.ssn_area_raw END)::text, 3, '0')
      || '-' || lpad(d.ssn_group::text, 2, '0')
      || '-' || lpad(d.ssn_serial::text, 4, '0') AS ssn
  FROM digits AS d
)
SELECT f.i, f.full_name, f.email, f.phone, f.card_number, f.ssn,
  CASE f.note_kind
    WHEN 0 THEN 'Asked us to send receipts to ' || f.email || ' instead of the billing address.'
    WHEN 1 THEN 'Paid over the phone with card ' || f.card_number || '. Verify before shipping.'
    WHEN 2 THEN 'Prefers a callback on ' || f.phone || ' after 5pm.'
    WHEN 3 THEN 'Card on file ' || f.card_number || ' was declined once; customer updated it by email ('
                || f.email || ').'
    WHEN 4 THEN 'Loyal customer since ' || f.since_year::text || '.'
    WHEN 5 THEN 'Prefers evening deliveries.'
    WHEN 6 THEN 'Leave parcels with the neighbour if nobody is home.'
    WHEN 7 THEN 'Interested in the premium plan. Follow up next quarter.'
    WHEN 8 THEN 'Complained about a late delivery in ' || f.since_year::text || '. Offered a discount.'
    WHEN 9 THEN NULL
    ELSE 'No special instructions.'
  END
FROM formatted AS f
ORDER BY f.i;

INSERT INTO orders (id, customer_id, amount, created_at)
SELECT i,
  1 + demo.rnd(i, 101) % 10000,
  round((100 + demo.rnd(i, 102) % 99900) / 100.0, 2),
  timestamptz '2023-01-01 00:00:00+00' + (demo.rnd(i, 103) % 63072000) * interval '1 second'
FROM generate_series(1, 50000) AS i
ORDER BY i;

COMMIT;
ANALYZE;
"#;
