import pytest
from django.core.exceptions import ValidationError

from vms.forms import CreateVMForm
from vms.validators import validate_hostname

from .factories import make_image, make_plan


@pytest.mark.parametrize("hostname", ["web", "web-1", "a", "web1.example.com", "x" * 63, "1web"])
def test_it_accepts_rfc1123_hostnames(hostname):
    validate_hostname(hostname)


@pytest.mark.parametrize(
    "hostname",
    [
        "",
        "-web",
        "web-",
        "web_1",
        "web..example",
        "x" * 64,
        ("a" * 60 + ".") * 5,
        "web;reboot",
        "web$(id)",
        "<script>",
        "web 1",
        "web/1",
        "123.456",
        "wéb",
    ],
)
def test_it_rejects_bad_hostnames(hostname):
    with pytest.raises(ValidationError):
        validate_hostname(hostname)


@pytest.mark.django_db
def test_the_create_form_rejects_a_bad_hostname_with_a_clear_message():
    plan, image = make_plan(), make_image()
    form = CreateVMForm({"plan": plan.pk, "image": image.pk, "hostname": "bad_name!"})
    assert not form.is_valid()
    assert "hyphen" in form.errors["hostname"][0]


@pytest.mark.django_db
def test_the_create_form_lowercases_the_hostname():
    plan, image = make_plan(), make_image()
    form = CreateVMForm(
        {"plan": plan.pk, "image": image.pk, "hostname": "Web-1", "password": "long-enough-pw-1"}
    )
    assert form.is_valid(), form.errors
    assert form.cleaned_data["hostname"] == "web-1"


@pytest.mark.django_db
def test_the_create_form_refuses_a_disk_smaller_than_the_image_needs():
    form = CreateVMForm(
        {"plan": make_plan(disk_gb=2).pk, "image": make_image(min_disk_gb=10).pk, "hostname": "web"}
    )
    assert not form.is_valid()
    assert "at least 10 GiB" in form.errors["plan"][0]


@pytest.mark.django_db
def test_the_create_form_offers_only_active_plans():
    active, inactive = make_plan(), make_plan(active=False)
    choices = list(CreateVMForm().fields["plan"].queryset)
    assert active in choices and inactive not in choices


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({}, "password", "Set a password or pick an SSH key"),
        ({"password": "123"}, "password", "too short"),
        ({"password": "x" * 80}, "password", "at most 72 bytes"),
        ({"password": "long-enough-pw-1", "user_data": "runcmd: [ls]"}, "user_data", "#cloud-config"),
        (
            {"password": "long-enough-pw-1", "user_data": "#cloud-config\n" + "a: b\n" * 5000},
            "user_data",
            "16 KiB",
        ),
    ],
)
def test_first_boot_settings_are_refused_clearly(fields, field, message):
    plan, image = make_plan(), make_image()
    form = CreateVMForm({"plan": plan.pk, "image": image.pk, "hostname": "web", **fields})
    assert not form.is_valid()
    assert message in " ".join(form.errors[field])


@pytest.mark.django_db
def test_an_image_without_cloud_init_needs_no_login_settings():
    plan, image = make_plan(), make_image(cloud_init=False)
    assert CreateVMForm({"plan": plan.pk, "image": image.pk, "hostname": "web"}).is_valid()
