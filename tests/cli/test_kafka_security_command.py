"""``carehub run`` and ``carehub worker`` refuse Kafka security settings that cannot work, in one line that names
the variables and never shows the password."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_carehub_command import assert_one_line_error, isolated, run_cli

PASSWORD = "hunter2-9f3b-never-printed"


def test_run_refuses_sasl_credentials_for_the_embedded_broker_without_printing_the_password(tmp_path: Path) -> None:
    result = run_cli(["run"], isolated(
        HUB_KAFKA_SECURITY_PROTOCOL="sasl_ssl", HUB_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        HUB_KAFKA_SASL_USERNAME="carehub", HUB_KAFKA_SASL_PASSWORD=PASSWORD,
    ), tmp_path)
    assert_one_line_error(result, "HUB_KAFKA_SASL_PASSWORD", "HUB_KAFKA_BOOTSTRAP", "no authentication")
    assert PASSWORD not in result.stdout + result.stderr


def test_worker_refuses_unencrypted_sasl_without_the_opt_in_before_it_connects(tmp_path: Path) -> None:
    """127.0.0.1:1 answers nothing: the refusal comes from the settings check, before any connection."""
    result = run_cli(["worker"], isolated(
        HUB_KAFKA_BOOTSTRAP="127.0.0.1:1", HUB_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        HUB_KAFKA_SASL_MECHANISM="SCRAM-SHA-512", HUB_KAFKA_SASL_USERNAME="carehub",
        HUB_KAFKA_SASL_PASSWORD=PASSWORD, HUB_BROKER_WAIT_S="30",
    ), tmp_path)
    assert_one_line_error(result, "HUB_KAFKA_ALLOW_UNENCRYPTED_SASL")
    assert PASSWORD not in result.stdout + result.stderr
