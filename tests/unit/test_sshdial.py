"""The ssh command line for docker's ssh:// hosts, and what a failed ssh says."""

from __future__ import annotations

import pytest

from bot.ops.swarm.sshdial import SSHDialAdapter, ssh_argv

DIAL = ["docker", "system", "dial-stdio"]


def test_argv_names_user_port_and_host_as_the_docker_cli_does() -> None:
    argv = ssh_argv("ssh://deploy@swarm.example.coop:2222")
    assert argv[0] == "ssh"
    assert "BatchMode=yes" in argv  # never a prompt: the bot has no terminal
    assert argv[argv.index("-l") + 1] == "deploy"
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[-5:] == ["--", "swarm.example.coop", *DIAL]


def test_an_alias_of_the_ssh_config_is_passed_as_it_is() -> None:
    argv = ssh_argv("ssh://coop-b")
    assert "-l" not in argv
    assert "-p" not in argv
    assert argv[-4:] == ["coop-b", *DIAL]


@pytest.mark.parametrize("host", ["unix:///var/run/docker.sock", "ssh://", "tcp://h:2375"])
def test_other_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="not an ssh:// docker host"):
        ssh_argv(host)


def test_last_error_is_what_ssh_printed() -> None:
    import docker.errors

    from bot.ops.swarm.sshdial import ssh_docker_client

    adapter = SSHDialAdapter("ssh://coopbot-no-such-host.invalid", timeout=10)
    with pytest.raises(docker.errors.DockerException):
        ssh_docker_client(adapter, 10)
    said = adapter.last_error()
    assert "coopbot-no-such-host.invalid" in said, said
    assert "Connection aborted" not in said
