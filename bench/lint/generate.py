"""Generate the benchmark inputs: a 5,000-statement file (~330 KB), a 50-statement migration,
a migration history (342 files, ~600 KB, as Lemmy's) as a directory and concatenated, and one
33 KB file.

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


HISTORY_EXTRA = [
    "CREATE TABLE t{n}_history (id serial PRIMARY KEY, t{m}_id int REFERENCES t{m} ON UPDATE CASCADE ON DELETE "
    "CASCADE NOT NULL, published timestamp NOT NULL DEFAULT now(), updated timestamp, deleted boolean DEFAULT FALSE "
    "NOT NULL, UNIQUE (t{m}_id, published));",
    "CREATE TRIGGER trg_{n} AFTER INSERT OR DELETE ON t{m} FOR EACH ROW EXECUTE PROCEDURE f{k}();",
    "CREATE VIEW v{n} AS SELECT a.id, count(b.*) AS n FROM t{m} a LEFT JOIN t{k} b ON b.id = a.id GROUP BY a.id;",
    "DO $$\nBEGIN\n  IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'kind_{n}') THEN\n"
    "    CREATE TYPE kind_{n} AS ENUM ('a', 'b');\n  END IF;\nEND\n$$;",
    "ALTER TABLE t{m} ALTER COLUMN name TYPE varchar(300);",
    "DROP TABLE IF EXISTS t{n}_old;",
]


def history(files: int = 342, target_bytes: int = 600_000, seed: int = 14, vary: bool = True) -> list[str]:
    """A migration history: ``files`` migrations of varied size, about ``target_bytes`` in all."""
    rnd = random.Random(seed)
    templates = TEMPLATES + HISTORY_EXTRA
    out, n = [], 0
    per_file = target_bytes // files
    for _ in range(files):
        lines, size = [], 0
        budget = int(per_file * rnd.uniform(0.3, 1.7)) if vary else per_file
        while size < budget:
            line = rnd.choice(templates).format(n=n, m=rnd.randrange(40), k=rnd.randrange(40))
            lines.append(line)
            size += len(line) + 1
            n += 1
        out.append("\n".join(lines) + "\n")
    return out


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "big.sql").write_text(generate(5000))
    (out / "migration.sql").write_text(generate(50))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/lint/data")
