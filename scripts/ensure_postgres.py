"""Makes sure PostgreSQL answers at TEST_POSTGRES_URL, where the tests make
a database of their own for each run: starts an installed Debian cluster, or
installs Debian's package when it is missing and we are root; otherwise says
what to do. A cluster started here gets the URL's password for its user."""
import glob
import os
import subprocess
from urllib.parse import urlsplit

import psycopg

from scripts.local_server import ensure

URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres:postgres@localhost:5432/postgres")


def answers():
    try:
        psycopg.connect(URL, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


def start():
    for conf in sorted(glob.glob("/etc/postgresql/*/*/postgresql.conf")):
        version, cluster = conf.split("/")[3:5]
        subprocess.run(["pg_ctlcluster", version, cluster, "start"], check=False)
    subprocess.run(["pg_isready", "-q", "-t", "60"], check=False)
    url = urlsplit(URL)
    if url.username and url.password:
        password = url.password.replace("'", "''")
        subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-q", "-c",
                        f"ALTER USER \"{url.username}\" PASSWORD '{password}'"], check=False)


def main():
    ensure("PostgreSQL", URL, urlsplit(URL).hostname, answers, "pg_ctlcluster", "postgresql", start,
           where_logs="/var/log/postgresql")


if __name__ == "__main__":
    main()
