#!/usr/bin/env bash
# Build the cupmon reference firmware for the ATmega328P (Arduino Uno) with
# avr-gcc -Os and avr-libc, without the Arduino core: the portable core
# (cupmon/cm_core.c) plus the register-level HAL (avr/main.c). Prints flash
# and RAM use and fails if the image does not fit an Uno with room to spare.
#
# usage: build_avr.sh [OUT_DIR]      (default: <repo>/build/avr)
# env:   AVR_GCC, AVR_SIZE, AVR_OBJCOPY, AVR_OBJDUMP   tools (default: avr-gcc, ...)
#        CM_CUPS                          cups to build for (1..4, default 4)
#        FLASH_LIMIT_PCT, RAM_LIMIT_PCT   budget, % of the Uno's (default 75)
#
# Output, one "key=value" per line on stdout (the tests parse it):
#   flash_bytes, flash_total, flash_pct, ram_bytes, ram_total, ram_pct,
#   stack_bytes (deepest call chain from main + one ISR), hex
# Exit status: 0 ok, 1 over budget, 2 build failed / tools missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/build/avr}
cc=${AVR_GCC:-avr-gcc}
size=${AVR_SIZE:-avr-size}
objcopy=${AVR_OBJCOPY:-avr-objcopy}
objdump=${AVR_OBJDUMP:-avr-objdump}
cups=${CM_CUPS:-4}
flash_pct_max=${FLASH_LIMIT_PCT:-75}
ram_pct_max=${RAM_LIMIT_PCT:-75}
# Uno: 32 KiB flash of which the optiboot bootloader keeps 512 B; 2 KiB SRAM.
flash_total=32256
ram_total=2048

for tool in "$cc" "$size" "$objcopy" "$objdump"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "build_avr.sh: $tool not found (apt-get install gcc-avr avr-libc binutils-avr)" >&2; exit 2; }
done

mkdir -p "$out"
elf=$out/cupmon-uno.elf
hex=$out/cupmon-uno.hex
cflags=(-mmcu=atmega328p -DF_CPU=16000000UL -DCM_MAX_CUPS="$cups" -DCM_CUPS="$cups"
        -Os -std=c99 -Wall -Wextra -Werror -ffunction-sections -fdata-sections
        -fstack-usage)

objs=()
for src in cupmon/cm_core.c avr/main.c; do
  obj=$out/$(basename "${src%.c}").o
  (cd "$out" && "$cc" "${cflags[@]}" -c "$here/$src" -o "$obj") || exit 2
  objs+=("$obj")
done
"$cc" -mmcu=atmega328p -Os -Wl,--gc-sections -o "$elf" "${objs[@]}" || exit 2
"$objcopy" -O ihex -R .eeprom "$elf" "$hex" || exit 2

# sysv format: section name, size, address
read -r text data bss noinit < <("$size" -A "$elf" | awk '
  $1==".text"{t=$2} $1==".data"{d=$2} $1==".bss"{b=$2} $1==".noinit"{n=$2}
  END{print t+0, d+0, b+0, n+0}')
flash=$((text + data))
ram=$((data + bss + noinit))

# Deepest stack: the call graph from the disassembly (call/rcall targets),
# each function's frame from -fstack-usage (.su), 2 bytes of return address
# per call; library routines without a .su entry (float, division, memcpy)
# are counted as 8 bytes. Depth from main(); an ISR adds isr_stack on top.
stack=$( { cat "$out"/*.su; echo "@@objdump"; "$objdump" -d "$elf"; } | awk '
  function depth(f,   i, n, parts, best, d) {
    if (f in memo) return memo[f]
    if (f in busy) return 0            # recursion: none in this firmware
    busy[f] = 1; best = 0
    n = split(calls[f], parts, " ")
    for (i = 1; i <= n; i++) { d = 2 + depth(parts[i]); if (d > best) best = d }
    delete busy[f]
    memo[f] = ((f in su) ? su[f] : 8) + best
    return memo[f]
  }
  $0 == "@@objdump" { dis = 1; next }
  !dis { split($1, a, ":"); f = a[length(a)]; sub(/\..*/, "", f)
         if (!(f in su) || $2 + 0 > su[f]) su[f] = $2 + 0; next }
  /^[0-9a-f]+ <[^>+]+>:$/ { cur = $2; gsub(/[<>:]/, "", cur); sub(/\..*/, "", cur); next }
  /call/ && match($0, /<[^>+]+>$/) {
    t = substr($0, RSTART + 1, RLENGTH - 2); sub(/\..*/, "", t)
    if (index(" " calls[cur] " ", " " t " ") == 0) calls[cur] = calls[cur] " " t
  }
  END { print depth("main") }')
isr_stack=32  # an ISR pushes at most ~16 registers + SREG + return address

flash_pct=$(awk -v a="$flash" -v b="$flash_total" 'BEGIN{printf "%.1f", 100*a/b}')
ram_pct=$(awk -v a="$ram" -v b="$ram_total" 'BEGIN{printf "%.1f", 100*a/b}')
echo "mcu=atmega328p"
echo "cups=$cups"
echo "flash_bytes=$flash"
echo "flash_total=$flash_total"
echo "flash_pct=$flash_pct"
echo "ram_bytes=$ram"
echo "ram_total=$ram_total"
echo "ram_pct=$ram_pct"
echo "stack_bytes=$((stack + isr_stack))"
echo "hex=$hex"
"$size" -A "$elf" >&2

status=0
if awk -v a="$flash" -v b="$flash_total" -v p="$flash_pct_max" 'BEGIN{exit !(a > b*p/100)}'; then
  echo "build_avr.sh: flash $flash B is over $flash_pct_max% of $flash_total B" >&2; status=1
fi
if awk -v a="$((ram + stack + isr_stack))" -v b="$ram_total" -v p="$ram_pct_max" 'BEGIN{exit !(a > b*p/100)}'; then
  echo "build_avr.sh: RAM $ram B + stack $((stack + isr_stack)) B is over $ram_pct_max% of $ram_total B" >&2; status=1
fi
exit $status
