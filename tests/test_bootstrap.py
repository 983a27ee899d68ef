"""bootstrap_panel (run.sh's first-run setup) seeds a rescue system, so rescue works out of the box."""

import io

import pytest
from django.core.management import call_command

from vms.management.commands import bootstrap_panel

from .factories import make_image, make_node

pytestmark = pytest.mark.django_db


def test_the_rescue_build_is_offered_as_a_rescue_system(tmp_path, monkeypatch):
    node = make_node()
    installed = []
    monkeypatch.setattr(bootstrap_panel, "register_node", lambda name, uri, **network: node)
    monkeypatch.setattr(
        bootstrap_panel,
        "install_image",
        lambda node, path, **fields: installed.append((path.name, fields)) or make_image(),
    )
    for name in ("debian-12-cloud.qcow2", "debian-12-rescue.qcow2"):
        (tmp_path / name).write_bytes(b"QFI\xfb")
    call_command(
        "bootstrap_panel",
        image=tmp_path / "debian-12-cloud.qcow2",
        rescue_image=tmp_path / "debian-12-rescue.qcow2",
        stdout=io.StringIO(),
    )
    (demo, demo_fields), (rescue, rescue_fields) = installed
    assert (demo, rescue) == ("debian-12-cloud.qcow2", "debian-12-rescue.qcow2")
    assert rescue_fields["rescue"] is True and not demo_fields.get("rescue")
    assert rescue_fields["volume_name"] != demo_fields["volume_name"]
