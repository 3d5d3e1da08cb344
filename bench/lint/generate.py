"""Generate the benchmark inputs: a 5,000-statement file (~330 KB) and a 50-statement migration.

Deterministic (seeded) so runs compare; the mix is what real migration directories hold:
table creation, column changes, indexes, constraints, data fixes, comments and a function body.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

TEMPLATES = [
    "CREATE TABLE IF NOT EXISTS new_t{n} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "name text NOT NULL, email varchar(255), created_at timestamptz NOT NULL DEFAULT now());",
    "ALTER TABLE t{m} ADD COLUMN c{n} integer;",
    "ALTER TABLE t{m} ADD COLUMN d{n} text NOT NULL DEFAULT 'x', ADD COLUMN e{n} uuid DEFAULT gen_random_uuid();",
    "CREATE INDEX idx_{n} ON t{m} (name, created_at);",
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS cidx_{n} ON t{m} USING btree (lower(email));",
    "ALTER TABLE t{m} ADD CONSTRAINT fk_{n} FOREIGN KEY (id) REFERENCES t{k} (id);",
    "ALTER TABLE t{m} ADD CONSTRAINT ck_{n} CHECK (char_length(name) < 200) NOT VALID;",
    "ALTER TABLE t{m} VALIDATE CONSTRAINT ck_{n};",
    "ALTER TABLE t{m} ALTER COLUMN email TYPE text;",
    "ALTER TABLE t{m} ALTER COLUMN name SET NOT NULL;",
    "UPDATE t{m} SET name = 'n{n}' WHERE id BETWEEN {n} AND {n} + 1000;",
    "INSERT INTO t{m} (name, email) VALUES ('a; b', 'x@example.com'), ('c', NULL);",
    "-- comment with a fake statement: CREATE INDEX bad ON t{m}(id);\nCOMMENT ON TABLE t{m} IS 'it''s table {n}';",
    "CREATE OR REPLACE FUNCTION f{n}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n  "
    "NEW.created_at := now(); -- CREATE INDEX inside a body\n  RETURN NEW;\nEND\n$$;",
    "DROP INDEX IF EXISTS idx_{k};",
    "ALTER TABLE t{m} RENAME COLUMN c{k} TO c{k}_old;",
    "SET lock_timeout = '2s';",
    "SELECT count(*) FROM t{m} WHERE created_at > now() - interval '1 day';",
]


def generate(count: int, seed: int = 5) -> str:
    rnd = random.Random(seed)
    lines = ["BEGIN;"] if count <= 100 else []
    for n in range(count - len(lines) - (1 if count <= 100 else 0)):
        template = rnd.choice(TEMPLATES)
        lines.append(template.format(n=n, m=rnd.randrange(20), k=rnd.randrange(20)))
    if count <= 100:
        lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "big.sql").write_text(generate(5000))
    (out / "migration.sql").write_text(generate(50))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/lint/data")
