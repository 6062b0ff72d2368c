"""What the converter CLIs check about DST before reading SRC (minutes for a 6B file)."""
import os
import os.path as osp


def check_dst(parser, src: str, dst: str, overwrite: bool) -> None:
    """``parser.error`` when ``dst`` is a directory, cannot be created (a file in its path), is
    ``src`` itself or inside a ``src`` folder, or exists without ``overwrite``."""
    if osp.isdir(dst):
        parser.error(f'DST {dst} is a directory; name the file to write')
    parent = osp.dirname(osp.abspath(dst))
    while not osp.exists(parent):
        parent = osp.dirname(parent)
    if not osp.isdir(parent):
        parser.error(f'DST {dst} cannot be created: {parent} is a file, not a directory')
    if not osp.exists(dst):
        return
    inside = osp.isdir(src) and osp.realpath(dst).startswith(osp.realpath(src) + os.sep)
    if (osp.exists(src) and osp.samefile(src, dst)) or inside:
        parser.error(f'DST {dst} is {"inside " if inside else ""}SRC: converting in place would '
                     f'destroy the source; write to another file')
    if not overwrite:
        parser.error(f'DST {dst} exists; pass --overwrite to replace it')
