#!/usr/bin/env bash
# open3d's Python wheel links against libusb-1.0 (for its RealSense support). Install Debian's package
# where we may; otherwise say exactly what to run.
set -u
if ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's libusb-1.0-0 (needed by open3d)..."
  (apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libusb-1.0-0 >/dev/null; }) \
    && exit 0
fi
cat >&2 <<'MSG'
NOTE: libusb-1.0 was not found and could not be installed automatically; open3d will fail to import.
      Install it with your package manager, e.g.:  sudo apt-get install libusb-1.0-0
      (Fedora: sudo dnf install libusb1;  macOS: brew install libusb)
MSG
exit 0
