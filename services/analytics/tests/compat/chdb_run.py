"""Runs SQL on chdb (the current ClickHouse release, in process).

Reads a JSON job on stdin: {"database", "migrations": [sql], "tables":
{name: TabSeparated rows}, "queries": [sql], "after": [sql]}. Applies the migrations in a
fresh database, loads the rows (through any materialized views, as on a
server), runs each query and prints a JSON list of
{"ok": TabSeparated text} or {"error": message}, one per query, then runs
the "after" statements the same way.
"""

import json
import sys

import chdb
from chdb import session


def main() -> None:
    job = json.load(sys.stdin)
    db = job["database"]
    sess = session.Session()
    sess.query(f"CREATE DATABASE IF NOT EXISTS {db}")
    sess.query(f"USE {db}")
    for statement in job["migrations"]:
        sess.query(statement)
    for table, rows in job["tables"].items():
        if rows:
            sess.query(f"INSERT INTO {table} FORMAT TabSeparated\n{rows}")
    results = []
    for query in job["queries"]:
        try:
            results.append({"ok": str(sess.query(query, "TabSeparated"))})
        except Exception as error:  # noqa: BLE001 - reported per query
            results.append({"error": str(error)})
    after = []
    for statement in job.get("after", []):
        try:
            after.append({"ok": str(sess.query(statement, "TabSeparated"))})
        except Exception as error:  # noqa: BLE001 - reported per statement
            after.append({"error": str(error)})
    server = str(sess.query("SELECT version()", "TabSeparated")).strip()
    json.dump(
        {"version": chdb.__version__, "server": server, "results": results, "after": after},
        sys.stdout,
    )


if __name__ == "__main__":
    main()
