"""Progress lines (skyrl_stack/reporter.py): stderr by default, or wherever a caller sends them."""
from skyrl_stack import reporter
from skyrl_stack.image import build


def test_a_library_step_goes_to_the_sink_a_caller_sets_and_back_to_stderr_after(tmp_path, monkeypatch, capsys):
    for name in build.CA_BUNDLE_ENVS:
        monkeypatch.delenv(name, raising=False)
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    lines: list[str] = []
    with reporter.report_to(lines.append):
        build.host_ca_bundle()  # reports the CA bundle it passes to the build
    assert lines == [f"passing the CA bundle SSL_CERT_FILE={ca} to the build as a secret (--ca-bundle overrides)"]
    assert capsys.readouterr().err == ""
    reporter.step("after the block")
    assert capsys.readouterr().err == "==> after the block\n"
