"""Which pydicom decoding plugin decodes which transfer syntax: a fixed order, not the environment's.

pydicom tries the plugins that happen to be installed in its own order, and lossy decoders
differ by a few values (IDCT and colour conversion: GDCM vs libjpeg differ by up to 5 on
pydicom's lossy JPEG test files). So the same recipe on the same files would give other
bytes on a machine with another decoder installed. medflow names the plugins to try, in
order, per transfer syntax:

* lossless syntaxes (every correct decoder gives the same values): the fastest first,
  measured on 512 x 512 CT slices: JPEG Lossless with GDCM 12-16 ms a slice vs 26-29 ms
  with pylibjpeg-libjpeg; RLE with pylibjpeg-rle 3.4-3.9 ms vs 10.7-11.3 ms with pydicom's
  own decoder; JPEG-LS Lossless with pyjpegls (CharLS, a dependency of highdicom) 6.4 ms vs
  GDCM 8.3 ms and pylibjpeg-libjpeg 30.5 ms; JPEG 2000 Lossless with GDCM 26.5 ms vs
  pylibjpeg-openjpeg 43.2 ms and Pillow 48.0 ms (medians of 20 slices of gen200 each; none of
  them releases the GIL);
* lossy syntaxes: pydicom's order without GDCM, i.e. the decoders medflow used before GDCM
  was a dependency, so outputs of lossy files did not change when it became one.

A plugin that fails on a file leaves it to the next, as pydicom does when none is named.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_Result = TypeVar("_Result")

#: Transfer syntax UID -> pydicom decoding plugins, in the order medflow tries them.
PLUGIN_ORDER: dict[str, tuple[str, ...]] = {
    # lossless, measured: the fastest first
    "1.2.840.10008.1.2.4.57": ("gdcm", "pylibjpeg"),  # JPEG Lossless, Non-Hierarchical (Process 14)
    "1.2.840.10008.1.2.4.70": ("gdcm", "pylibjpeg"),  # JPEG Lossless, Process 14, Selection Value 1
    "1.2.840.10008.1.2.5": ("pylibjpeg", "pydicom"),  # RLE Lossless
    "1.2.840.10008.1.2.4.80": ("pyjpegls", "gdcm", "pylibjpeg"),  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90": ("gdcm", "pylibjpeg", "pillow"),  # JPEG 2000 Lossless Only
    # lossless, not measured: the earlier order
    "1.2.840.10008.1.2.4.201": ("pylibjpeg",),  # HTJ2K Lossless Only
    "1.2.840.10008.1.2.4.202": ("pylibjpeg",),  # HTJ2K RPCL Lossless Only
    # lossy: the decoders of medflow's earlier versions (pydicom's order without GDCM)
    "1.2.840.10008.1.2.4.50": ("pylibjpeg", "pillow", "gdcm"),  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51": ("pylibjpeg", "pillow", "gdcm"),  # JPEG Extended (Process 2 and 4)
    "1.2.840.10008.1.2.4.81": ("pylibjpeg", "pyjpegls", "gdcm"),  # JPEG-LS Lossy (Near-Lossless)
    "1.2.840.10008.1.2.4.91": ("pylibjpeg", "pillow", "gdcm"),  # JPEG 2000
    "1.2.840.10008.1.2.4.203": ("pylibjpeg",),  # HTJ2K
}


def plugins_for(transfer_syntax: str) -> tuple[str, ...]:
    """The installed plugins medflow tries for ``transfer_syntax``, in order (empty: leave it to pydicom).

    Empty for native syntaxes (no plugin), syntaxes pydicom cannot decode, and when none of
    the named plugins is installed (pydicom then says what is missing).
    """
    order = PLUGIN_ORDER.get(str(transfer_syntax))
    if not order:
        return ()
    from pydicom.pixels import get_decoder

    try:
        available = set(get_decoder(str(transfer_syntax)).available_plugins)
    except NotImplementedError:
        return ()
    return tuple(name for name in order if name in available)


def transfer_syntax_of(ds: Any) -> str:
    """The transfer syntax UID of a data set read by pydicom ('' when it has no file meta)."""
    return str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")


def decode_with(decode: Callable[..., _Result], transfer_syntax: str) -> _Result:
    """``decode(decoding_plugin=name)`` with medflow's plugins for ``transfer_syntax`` in turn.

    The first plugin's result unless it raises; the next is tried then, and the first
    plugin's error is raised when all fail. With no plugin to name, ``decode()`` (pydicom's
    own choice).
    """
    plugins = plugins_for(transfer_syntax)
    if not plugins:
        return decode()
    first_error: Exception | None = None
    for name in plugins:
        try:
            return decode(decoding_plugin=name)
        except Exception as exc:  # noqa: BLE001 - decoders raise many types; the next may succeed
            if first_error is None:
                first_error = exc
    assert first_error is not None
    raise first_error
