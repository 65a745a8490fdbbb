"""virtops-controller's command line: the serving certificate the cluster role installs."""

from __future__ import annotations

import pytest
from virtops.controller.main import parse_args


def test_tls_files_are_optional_and_go_together():
    args = parse_args(["--kubeconfig=k", "--tls-cert-file=c", "--tls-private-key-file=k", "--tls-ca-file=a"])
    assert (args.tls_cert_file, args.tls_private_key_file, args.tls_ca_file) == ("c", "k", "a")
    assert parse_args(["--kubeconfig=k"]).tls_cert_file is None  # then it issues its own


def test_a_certificate_without_its_key_or_ca_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--kubeconfig=k", "--tls-cert-file=c"])
    assert "go together" in capsys.readouterr().err


def test_replicas_share_the_api_port_only_when_asked():
    assert parse_args(["--kubeconfig=k"]).api_reuse_port is False
    assert parse_args(["--kubeconfig=k", "--api-port=8443", "--api-reuse-port"]).api_reuse_port is True
