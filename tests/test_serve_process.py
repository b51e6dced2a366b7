"""engine/serve_process.py's pieces that need no model: the token file, the socket, the folder stamp --watch
compares. The processes, signals and reloads themselves are tested end to end in test_serve.py."""
import os
import socket

import pytest

from paddle_models.engine.serve_process import bind, folder_stamp, read_token, ready_line


def test_token_file(tmp_path):
    assert read_token(None) is None
    (tmp_path / "t").write_text("  s3cret \n")
    assert read_token(str(tmp_path / "t")) == "s3cret"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match=f"{tmp_path / 'empty'}: the token file is empty"):
        read_token(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError):
        read_token(str(tmp_path / "missing"))


def test_bind_any_port_listens_and_is_inheritable():
    sock = bind("127.0.0.1", 0)
    try:
        host, port = sock.getsockname()[:2]
        assert host == "127.0.0.1" and port > 0 and sock.get_inheritable()
        assert ready_line(sock) == f"serving on http://127.0.0.1:{port}"
        with socket.create_connection((host, port), timeout=5):
            pass  # the backlog accepts a connection before anyone calls accept()
    finally:
        sock.close()


def test_folder_stamp_sees_a_repointed_link_and_a_rewritten_export_yaml(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "export.yaml").write_text("family: x\n")
    link = tmp_path / "current"
    os.symlink(tmp_path / "a", link)
    first = folder_stamp(str(link))
    assert first[0] == str(tmp_path / "a") and first[1] is not None
    os.utime(tmp_path / "a" / "export.yaml", ns=(first[1] + 10**9, first[1] + 10**9))
    assert folder_stamp(str(link)) == (str(tmp_path / "a"), first[1] + 10**9)
    os.remove(link)
    os.symlink(tmp_path / "b", link)
    assert folder_stamp(str(link))[0] == str(tmp_path / "b")
    os.remove(tmp_path / "b" / "export.yaml")
    assert folder_stamp(str(link)) == (str(tmp_path / "b"), None)  # mid-rewrite: no reload yet
