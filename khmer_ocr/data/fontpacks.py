"""More Khmer training fonts: Google's Khmer families (SIL Open Font License 1.1) from the npm registry's
Fontsource packages, pinned by version and checksum, converted to TTF into a user font folder.

Debian ships 13 usable Khmer fonts (fonts-khmeros, fonts-noto-core); real documents and screens use many
more designs, and a recognizer trained on 13 generalises poorly to the next one. Left out on purpose:
`siemreap` (the design of the held-out KhmerOSsiemreap, our unseen-font test split), Noto Serif Khmer
(reserved for independent evaluation) and `odor-mean-chey` (its zero looks like a dot: labels would lie).
Run by `make setup`, or `khmer-ocr fonts --install`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from khmer_ocr.errors import KhmerOcrError

REGISTRY = "https://registry.npmjs.org"
WEIGHTS = {400: "Regular", 700: "Bold"}  # the static instances taken from each package, when present
LICENSE = "OFL-1.1"


@dataclass(frozen=True)
class FontPack:
    package: str  # @fontsource/<package>
    version: str
    integrity: str  # the registry's sha512 of the tarball


FONT_PACKS = (
    FontPack(
        "angkor",
        "5.3.0",
        "MTo/5Zvwo2UFEbfXzsgEGsRwN2aE0Pub6AQmKI6aOIA3xBNE1jY3KE6q1ovawGcSLYZ9PV8uZjZNk/k5J2cwxQ==",
    ),
    FontPack(
        "battambang",
        "5.3.0",
        "K3/dETCboyzb5Q+vt7wQphP1lg7uU28bYhlxP+ncbewDJjBmh3xYGYb+UHhECuKnkuHdZWGyQI8EJS4RZnYreg==",
    ),
    FontPack(
        "bayon",
        "5.3.0",
        "TBCIQwjJ/wpVSWk2Gj8/WXV0IpIFSxmghqA1fK1oKuvNs/OODfjozif9h3ombdaRCTtkIgVEQzUIxCzkc3Bqhw==",
    ),
    FontPack(
        "bokor",
        "5.0.12",
        "bIoAUIW8dS2s/Dnk2Ollup2IznS9mskDHGO6BvV7B37oW+o1HkOhkPFp9LdrKWDCJevTUsu5XYA3h3iCn1EVoQ==",
    ),
    FontPack(
        "chenla",
        "5.3.0",
        "HqmOjMMslZzg9g43E76Q6ZY6CAK9AejlrBjdnOJBe8HrbsRqOqsbec4cTwUxJ3JZgu+dPZvEEvOvIIOE16Ml1Q==",
    ),
    FontPack(
        "content",
        "5.3.0",
        "jEjNdR3vn20lL8SNDRJn8UrSzhRW/+U8ZR/jpi863+JHNEIeg7edGnrzocdvaNI6n34BLPi+Yjpm+pIBi7fWtQ==",
    ),
    FontPack(
        "dangrek",
        "5.3.0",
        "Sqlg6UjYWd4EN50zc5iGT9XUb67V98b08y89igk6mxv24Ax7Vo/DpPccMaji+r4fXz5DrPidosW+qJqRx6pedQ==",
    ),
    FontPack(
        "fasthand",
        "5.0.20",
        "8R44lLEMDi1+Z13MJou+gij/MC17uAbAIWTvukTzz+34izn+P/nK7Q2ZSDhdQgOVAHaPHO6un+fC/vPtr6sjMg==",
    ),
    FontPack(
        "freehand",
        "5.2.8",
        "ZJu6hdS3NKQ5mm7ukYRX3uEo91aQ6LxroClKRYlMHwRwMvpbnEtg5hJlMKQjqCLqH3TaUuBS30Ap6SqcLYH04g==",
    ),
    FontPack(
        "hanuman",
        "5.3.0",
        "xNFoeucq6xAQQnT39Ae6OJFdsEFBDhgVlJkv6yJ/exzo+qP3reQRuPmSaJLWyReJ4xVO5WJHxo0+HZSfOzDkKg==",
    ),
    FontPack(
        "kantumruy-pro",
        "5.3.0",
        "pNspQPQGjG+fYx7YRHmjYodOhcHE4vCfxjPuefX7Qzydt4crLHCqrCk2VYiqLjJ9b/WKg1CEAMHKE3f/MAKHQA==",
    ),
    FontPack(
        "kdam-thmor-pro",
        "5.2.5",
        "lGtom+nTiOyyq+u4wRujy7TJnkueX65E39kD3Cbatsi6h70KZkC5xc+/Vswm5LZmozeZFyBVcK9urHJrTriEXA==",
    ),
    FontPack(
        "khmer",
        "5.3.0",
        "wz263qn1wDK75/gKSeYSqyRIPfM363A7m9B3HIJZNEYExA2q5ahJTlW0lYVWpW+UuvmROCXva2CX+VusVVLeaQ==",
    ),
    FontPack(
        "koulen",
        "5.3.0",
        "WdCv4Sam+CDG7xx0FmNaWyEAGBT8P9tFISlGsaHE0LOpvg2OJ94c06eFTk5hSSdkn3P/bjDcsVvwuoXiCsfh8A==",
    ),
    FontPack(
        "moul",
        "5.3.0",
        "dgMxtlAn0/xt925nlyoKdQazCFqChitCEpW2SEpk/KvplLjRgrFXWoxRVHIi00xkCiKhmMm8dW/DOlQyNNs3Jg==",
    ),
    FontPack(
        "moulpali",
        "5.3.0",
        "fv9e8TF3FlOkLlT1IVES2pGCFd20aQbqIfyQikDn3E6rwpyx6yVi/B/c38xGXsi53a2lhfmwNnbAFUmFk+5u0g==",
    ),
    FontPack(
        "nokora",
        "5.1.0",
        "BoOvt+1thpQ/RWja5LkHoGKC8VIMZx7TNqCyd1mhYrUI9cSIVygO9/A+75JiFnm4AXce1ku2ZlR+9V8vv8wD+A==",
    ),
    FontPack(
        "preahvihear",
        "5.3.0",
        "8/4fmFe80F7bk17Iwbj5xdZhp75BZgOQsf78pRywxj8Pwas9rWqvo5ovphxuvJ5S+B1Jtu8EjvhFBYZFhm/VWQ==",
    ),
    FontPack(
        "suwannaphum",
        "5.2.8",
        "s8H0KQ2SPQvUDUa1we0OIuUOD+rh6TqoStQuhOg2AfUX64F7SrRUS+mVJ0Q2quLo9n1Keuqawynx5Q3AKmgJtg==",
    ),
    FontPack(
        "taprom",
        "5.3.0",
        "xoBHCa/zuR0iE0enDJiI22rLnjqr7z1LQCpiHJK+9G0x+fccfkkjSsURzOtryfbHyRosbV3/H72wSJIIt/4IkA==",
    ),
)


class FontPackError(KhmerOcrError, RuntimeError):
    """A font package that cannot be fetched, verified or converted."""


def font_pack_dir() -> Path:
    """Where the converted fonts go: KHMER_OCR_FONT_DIR, else the user font folder fontconfig reads."""
    if env := os.environ.get("KHMER_OCR_FONT_DIR"):
        return Path(env)
    data_home = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return data_home / "fonts" / "khmer-ocr"


def _family(package: str) -> str:
    return "".join(part.capitalize() for part in package.split("-"))


def _fetch(pack: FontPack) -> bytes:
    url = f"{REGISTRY}/@fontsource/{pack.package}/-/{pack.package}-{pack.version}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except OSError as exc:
        raise FontPackError(f"cannot download {url}: {exc}") from exc
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != pack.integrity:
        raise FontPackError(f"{url}: sha512 {digest} does not match the pinned {pack.integrity}")
    return data


def _install_pack(pack: FontPack, dest: Path) -> list[Path]:
    from fontTools.ttLib import TTFont

    written = []
    with tarfile.open(fileobj=io.BytesIO(_fetch(pack)), mode="r:gz") as tar:
        for weight, style in WEIGHTS.items():
            member = f"package/files/{pack.package}-khmer-{weight}-normal.woff"
            try:
                raw = tar.extractfile(member)
            except KeyError:
                continue
            if raw is None:
                continue
            font = TTFont(io.BytesIO(raw.read()))  # the Khmer subset also covers ASCII and Latin-1
            font.flavor = None  # WOFF -> plain TrueType (HarfBuzz and fontconfig read it directly)
            path = dest / f"{_family(pack.package)}-{style}.ttf"
            font.save(str(path))
            written.append(path)
    if not written:
        raise FontPackError(f"@fontsource/{pack.package}@{pack.version} holds no Khmer subset to install")
    return written


def install_font_packs(
    dest: Path | None = None, force: bool = False, packs: tuple[FontPack, ...] = FONT_PACKS
) -> list[Path]:
    """Download, verify and convert every pinned pack not yet installed; returns the TTF files present.
    A stamp file per pack version makes reruns free."""
    dest = dest or font_pack_dir()
    dest.mkdir(parents=True, exist_ok=True)
    for pack in packs:
        stamp = dest / f".{pack.package}-{pack.version}.installed"
        if stamp.exists() and not force:
            continue
        _install_pack(pack, dest)
        stamp.write_text(f"@fontsource/{pack.package}@{pack.version} {LICENSE}\n")
    if shutil.which("fc-cache"):
        subprocess.run(["fc-cache", "-f", str(dest)], check=False, capture_output=True)
    return sorted(dest.glob("*.ttf"))


def licence_of(path: str) -> str | None:
    """'<package>@<version> OFL-1.1' for a font installed from a pack, None for other fonts."""
    p = Path(path)
    family = p.stem.split("-")[0]
    for pack in FONT_PACKS:
        stamp = p.parent / f".{pack.package}-{pack.version}.installed"
        if _family(pack.package) == family and stamp.exists():
            return f"@fontsource/{pack.package}@{pack.version} {LICENSE}"
    return None
