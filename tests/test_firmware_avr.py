"""The firmware builds for the ATmega328P within an Uno's budget, and the
Arduino sketch compiles and boots against a stand-in of the Arduino API."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from firmware_bridge.cfirmware import FIRMWARE_DIR
from firmware_bridge.protocol import EventCode, MsgType, crc16_ccitt_false

SCRIPT = FIRMWARE_DIR / "build_avr.sh"
AVR_TOOLS = ("avr-gcc", "avr-size", "avr-objcopy", "avr-objdump")
missing = [t for t in AVR_TOOLS if shutil.which(t) is None]
needs_avr = pytest.mark.skipif(
    bool(missing),
    reason=f"{', '.join(missing)} not installed (apt-get install gcc-avr avr-libc binutils-avr)")

UNO_FLASH = 32 * 1024 - 512  # optiboot keeps 512 B
UNO_RAM = 2048


def build(out: Path, **env: str) -> tuple[int, dict[str, str], str]:
    r = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True,
                       timeout=120, env={**os.environ, **env})
    values = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    return r.returncode, values, r.stderr


@pytest.fixture(scope="module")
def uno(tmp_path_factory):
    out = tmp_path_factory.mktemp("avr")
    rc, values, err = build(out)
    return rc, values, err, out


@needs_avr
def test_uno_image_fits_with_room_to_spare(uno):
    rc, v, err, out = uno
    assert rc == 0, err
    flash, ram, stack = int(v["flash_bytes"]), int(v["ram_bytes"]), int(v["stack_bytes"])
    assert int(v["flash_total"]) == UNO_FLASH and int(v["ram_total"]) == UNO_RAM
    assert 2000 < flash <= 0.75 * UNO_FLASH
    assert 100 < ram and ram + stack <= 0.75 * UNO_RAM
    assert float(v["flash_pct"]) == pytest.approx(100 * flash / UNO_FLASH, abs=0.05)
    # the numbers are avr-size's: .text + .data in flash, .data + .bss (+ .noinit) in RAM
    sections = dict(re.findall(r"^(\.\w+)\s+(\d+)", err, re.M))
    assert flash == int(sections[".text"]) + int(sections.get(".data", 0))
    hexfile = Path(v["hex"])
    assert hexfile.parent == out
    lines = hexfile.read_text().split()
    assert lines[-1] == ":00000001FF" and all(re.fullmatch(r":[0-9A-F]+", x) for x in lines)


@needs_avr
def test_image_holds_the_core_and_keeps_the_crc_table_in_flash(uno):
    rc, v, err, out = uno
    assert rc == 0, err
    syms = subprocess.run(["avr-nm", str(out / "cupmon-uno.elf")], capture_output=True,
                          text=True, check=True).stdout
    kinds = {name: kind for _, kind, name in
             (line.split() for line in syms.splitlines() if len(line.split()) == 3)}
    for fn in ("cm_init", "cm_poll", "cm_rx_byte", "cm_crc16", "cm_counts_to_centi", "main"):
        assert kinds.get(fn) in ("T", "t"), fn
    assert kinds.get("cm_crc_table") in ("T", "t")  # PROGMEM: 512 B of flash, no RAM


@needs_avr
@pytest.mark.parametrize("var,pct", [("FLASH_LIMIT_PCT", "10"), ("RAM_LIMIT_PCT", "5")])
def test_build_fails_when_over_budget(tmp_path, var, pct):
    rc, v, err = build(tmp_path, **{var: pct})
    assert rc == 1
    assert "over " + pct + "%" in err
    assert int(v["flash_bytes"]) > 0  # the figures are still printed


def test_build_reports_missing_tools(tmp_path):
    rc, _, err = build(tmp_path, AVR_GCC="avr-gcc-that-does-not-exist")
    assert rc == 2 and "not found" in err


# --- the Arduino sketch, against a minimal stand-in of the Arduino API ------------------
# This checks that cupmon.ino is consistent C++ that wires every HAL function the
# core needs and boots the core; it cannot check the real Arduino cores.

ARDUINO_H = r"""
#pragma once
#include <stdint.h>
#include <string.h>
#define HIGH 1
#define LOW 0
#define OUTPUT 1
enum { A0 = 14, A1, A2, A3, A4, A5 };
void pinMode(uint8_t pin, uint8_t mode);
void digitalWrite(uint8_t pin, uint8_t v);
int analogRead(uint8_t pin);
void analogReadResolution(int bits);
unsigned long micros(void);
struct SerialStub {
    void begin(unsigned long baud);
    int available(void);
    int read(void);
    int availableForWrite(void);
    size_t write(const uint8_t *buf, size_t len);
};
extern SerialStub Serial;
struct Rp2040Stub { void wdt_begin(uint32_t ms); void wdt_reset(void); };
extern Rp2040Stub rp2040;
"""

EEPROM_H = r"""
#pragma once
#include <stdint.h>
struct EEPROMStub {
    uint8_t read(int addr);
    void write(int addr, uint8_t v);
    void update(int addr, uint8_t v);
    void begin(int size);
    bool commit(void);
};
extern EEPROMStub EEPROM;
"""

STUB_CPP = r"""
#include <stdio.h>
#include "Arduino.h"
#include "EEPROM.h"
SerialStub Serial;
EEPROMStub EEPROM;
Rp2040Stub rp2040;
static unsigned long now_us;
#ifdef __AVR__
static uint8_t eeprom[E2END + 1];  /* the stub must fit the Uno's RAM too */
static uint8_t out[300];
#else
static uint8_t eeprom[4096];
static uint8_t out[4096];
#endif
static uint8_t pins[64];
static size_t out_n;
void pinMode(uint8_t, uint8_t) {}
void digitalWrite(uint8_t pin, uint8_t v) { pins[pin] = v; }
int analogRead(uint8_t) { return ANALOG_VALUE; }
void analogReadResolution(int) {}
unsigned long micros(void) { return now_us; }
void SerialStub::begin(unsigned long) {}
int SerialStub::available(void) { return 0; }
int SerialStub::read(void) { return -1; }
int SerialStub::availableForWrite(void) { return 64; }
size_t SerialStub::write(const uint8_t *b, size_t n) {
    for (size_t i = 0; i < n && out_n < sizeof(out); i++) out[out_n++] = b[i];
    return n;
}
void Rp2040Stub::wdt_begin(uint32_t) {}
void Rp2040Stub::wdt_reset(void) {}
uint8_t EEPROMStub::read(int a) { return eeprom[a]; }
void EEPROMStub::write(int a, uint8_t v) { eeprom[a] = v; }
void EEPROMStub::update(int a, uint8_t v) { eeprom[a] = v; }
void EEPROMStub::begin(int) {}
bool EEPROMStub::commit(void) { return true; }
void setup(void);
void loop(void);
int main(void) {
    memset(eeprom, 0xFF, sizeof(eeprom));
    setup();
    for (int i = 0; i < 25; i++) { loop(); now_us += 1000; }
    for (size_t i = 0; i < out_n; i++) printf("%02x", out[i]);
    printf("\n");
    for (int p = 0; p < 64; p++) if (pins[p]) printf("%d ", p);
    printf("\n");
    return 0;
}
"""


def _stubs(d: Path) -> None:
    (d / "Arduino.h").write_text(ARDUINO_H)
    (d / "EEPROM.h").write_text(EEPROM_H)
    (d / "stub.cpp").write_text(STUB_CPP)


def _frames(data: bytes):
    i, out = 0, []
    while i < len(data):
        assert data[i:i + 3] == b"\xa5\x5a\x01"
        typ, n, seq, t = struct.unpack_from("<BBHI", data, i + 3)
        assert struct.unpack_from("<H", data, i + 11 + n)[0] == crc16_ccitt_false(
            data[i + 2:i + 11 + n])
        out.append((typ, data[i + 11:i + 11 + n]))
        i += 13 + n
    return out


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_pico_sketch_boots_and_samples_with_the_stub_api(tmp_path):
    _stubs(tmp_path)
    exe = tmp_path / "pico"
    sketch = tmp_path / "cupmon.cpp"
    shutil.copy(FIRMWARE_DIR / "cupmon" / "cupmon.ino", sketch)
    # 0.92 * Vs at 0 kPa: 4.6 V -> divider 3.067 V -> 3806 counts at 3.3 V
    cmd_c = ["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-c",
             str(FIRMWARE_DIR / "cupmon" / "cm_core.c"), "-o", str(tmp_path / "core.o")]
    cmd = ["g++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-DARDUINO_ARCH_RP2040",
           "-DANALOG_VALUE=3806", "-I", str(tmp_path), "-I", str(FIRMWARE_DIR / "cupmon"),
           str(sketch), str(tmp_path / "stub.cpp"), str(tmp_path / "core.o"), "-o", str(exe)]
    for c in (cmd_c, cmd):
        r = subprocess.run(c, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30, check=True)
    hex_out, pins_high = r.stdout.split("\n")[:2]
    frames = _frames(bytes.fromhex(hex_out))
    assert frames[0][0] == MsgType.INFO
    serial, *_rest = struct.unpack("<16s3BBHBBBh", frames[0][1])
    assert serial.rstrip(b"\0") == b"CUPMON-PICO"
    assert _rest[3] == 3 and _rest[7] == 12  # cups, ADC bits
    assert frames[1] == (MsgType.EVENT, struct.pack("<BBh", EventCode.BOOT, 0, 0))
    samples = [p for t, p in frames if t == MsgType.SAMPLE]
    assert len(samples) == 3  # 25 ms at 100 Hz: t = 0, 10, 20 ms
    n = samples[0][0]
    suction = struct.unpack_from(f"<{n}h", samples[0], 1)
    assert n == 3 and all(abs(s) <= 10 for s in suction)  # 0 kPa within 0.1 kPa
    # idle: pumps (2, 4, 6) off, valves (3, 5, 7) de-energised = open; LED off
    assert pins_high.split() == []


@pytest.mark.skipif(shutil.which("avr-g++") is None, reason="avr-g++ not installed")
def test_uno_sketch_compiles_and_links_for_the_atmega328p(tmp_path):
    _stubs(tmp_path)
    sketch = tmp_path / "cupmon.cpp"
    shutil.copy(FIRMWARE_DIR / "cupmon" / "cupmon.ino", sketch)
    flags = ["-mmcu=atmega328p", "-DF_CPU=16000000UL", "-Os", "-Wall", "-Wextra", "-Werror"]
    steps = [
        ["avr-gcc", *flags, "-std=c99", "-c", str(FIRMWARE_DIR / "cupmon" / "cm_core.c"),
         "-o", str(tmp_path / "core.o")],
        ["avr-g++", *flags, "-std=c++11", "-DARDUINO_ARCH_AVR", "-DANALOG_VALUE=942",
         "-include", "avr/io.h",
         "-I", str(tmp_path), "-I", str(FIRMWARE_DIR / "cupmon"), str(sketch),
         str(tmp_path / "stub.cpp"), str(tmp_path / "core.o"), "-o", str(tmp_path / "uno.elf")],
    ]
    for c in steps:
        r = subprocess.run(c, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
