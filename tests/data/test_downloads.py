"""Folders as one zip for a browser download (workbench.data.downloads.zip_folder): unzipped with the standard
library, every file comes back byte for byte under the folder's own name; weights are stored, text deflated."""

import zipfile
from io import BytesIO

from workbench.data import downloads


def test_a_folder_zips_to_itself_byte_for_byte(tmp_path):
    folder = tmp_path / "run1-adapter"
    (folder / "sub").mkdir(parents=True)
    files = {"adapter_config.json": b'{"r": 8}\n' * 50, "adapter_model.safetensors": bytes(range(256)) * 40,
             "sub/tokenizer.json": "ünïcode".encode() * 30, "empty.txt": b""}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    data = downloads.zip_folder(folder)
    with zipfile.ZipFile(BytesIO(data)) as z:
        assert z.testzip() is None
        assert sorted(z.namelist()) == sorted(f"run1-adapter/{n}" for n in files)
        for name, content in files.items():
            assert z.read(f"run1-adapter/{name}") == content
        kinds = {i.filename.rsplit("/", 1)[-1]: i.compress_type for i in z.infolist()}
    assert kinds["adapter_model.safetensors"] == zipfile.ZIP_STORED
    assert kinds["adapter_config.json"] == zipfile.ZIP_DEFLATED
    assert downloads.folder_size(folder) == sum(map(len, files.values()))
    out = tmp_path / "unzipped"
    zipfile.ZipFile(BytesIO(data)).extractall(out)
    assert (out / "run1-adapter" / "sub" / "tokenizer.json").read_bytes() == files["sub/tokenizer.json"]
