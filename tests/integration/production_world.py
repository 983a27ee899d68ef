"""What the production tests do to a staged install's database, in a process of its own.

The test process has its own test database; the staged panel has the one the install made. This
module runs with the panel's production settings (tests.integration.staged.world) and prints JSON:

    previous-release   take the database back to the previous release's migrations, put a row in
                       every table of the panel's apps, and print the row counts
    counts TABLE...    the row counts of those tables now (after an upgrade)
    cast NODE POOL NETWORK IMAGE_VOLUME
                       a customer, this machine as a node with the test's pool and network, the
                       image in that pool, and a plan
    row-count TABLE    rows in one table (a backup and restore)
    image NAME         an image's format, size, volume and status
    last-sign-in-failure
                       the client address of the newest refused sign-in in the audit log
"""

import json
import sys

import django


def previous_release() -> dict:
    from tests.test_migrate_layout import BEFORE, _fill_every_table, _migrate, _row_counts

    old = _migrate(BEFORE)
    _fill_every_table(old)
    return _row_counts(old)


def counts(*tables: str) -> dict:
    return {table: row_count(table) for table in tables}


def cast(node_name: str, pool: str, network: str, image_volume: str) -> dict:
    from nodes.registration import register_node
    from tests.factories import make_image, make_plan, make_user

    customer = make_user("carol", email="carol@example.com")
    node = register_node(node_name, "qemu:///system", pool_name=pool, network_name=network)
    image = make_image(name="Debian 12 (test)", volume_name=image_volume, default_user="debian", on=[node])
    plan = make_plan(name="Nano", vcpus=1, memory_mib=512, disk_gb=4)
    return {"customer": customer.username, "node": node.name, "image": image.name, "plan": str(plan)}


def row_count(table: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)}")  # noqa: S608 (a test's table)
        return cursor.fetchone()[0]


def image(name: str) -> dict:
    from images.models import Image

    found = Image.objects.get(name=name)
    return {
        "format": found.format,
        "size_bytes": found.size_bytes,
        "volume_name": found.volume_name,
        "status": found.status,
    }


def last_sign_in_failure() -> str | None:
    from accounts.models import AuditEntry

    entry = AuditEntry.objects.filter(action="account.login", outcome="refused").latest("at")
    return entry.address


VERBS = {
    "previous-release": previous_release,
    "counts": counts,
    "cast": cast,
    "row-count": row_count,
    "image": image,
    "last-sign-in-failure": last_sign_in_failure,
}

if __name__ == "__main__":
    django.setup()
    verb, *arguments = sys.argv[1:]
    print(json.dumps(VERBS[verb](*arguments)))
