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
    form = CreateVMForm({"plan": plan.pk, "image": image.pk, "hostname": "Web-1"})
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
