// cupmon reference firmware: Arduino sketch.
//
// The logic (framing, commands, regulator, interlock, sensor checks,
// calibration) is the portable C core in cm_core.c, the very code the host
// tests run through ctypes; this sketch only wires it to the board: ADC,
// pump and valve pins, the serial port, the clock and EEPROM.
//
// Boards (pin tables below, wiring in docs/firmware.md):
//   * Arduino Uno / Nano (ATmega328P, 5 V): 4 cups, 10-bit ADC referenced to
//     the sensors' own 5 V supply (ratiometric).
//   * Raspberry Pi Pico (RP2040, arduino-pico core): 3 cups, 12-bit ADC at
//     3.3 V behind a 10k/20k divider; see the note at PICO_RATIO.
//
// Valves are normally open (vent when unpowered): a reset or a power cut
// releases every cup. The watchdog resets a hung loop.

#include <Arduino.h>
#include <EEPROM.h>

#include "cm_core.h"

#if defined(ARDUINO_ARCH_AVR)
#include <avr/wdt.h>
#define BOARD_CUPS 4
#define BOARD_ADC_BITS 10
#define BOARD_SERIAL "CUPMON-UNO"
static const uint8_t SENSOR_PIN[BOARD_CUPS] = {A0, A1, A2, A3};
static const uint8_t PUMP_PIN[BOARD_CUPS] = {3, 5, 6, 9};
static const uint8_t VALVE_PIN[BOARD_CUPS] = {4, 7, 8, 10};
static const uint8_t STATUS_LED = 13;
#elif defined(ARDUINO_ARCH_RP2040)
#define BOARD_CUPS 3
#define BOARD_ADC_BITS 12
#define BOARD_SERIAL "CUPMON-PICO"
#define BOARD_EEPROM_SIZE 512
static const uint8_t SENSOR_PIN[BOARD_CUPS] = {26, 27, 28}; // ADC0..ADC2
static const uint8_t PUMP_PIN[BOARD_CUPS] = {2, 4, 6};
static const uint8_t VALVE_PIN[BOARD_CUPS] = {3, 5, 7};
static const uint8_t STATUS_LED = 25;
// The MPXV6115V runs from VBUS (5 V) and the Pico's ADC from 3.3 V, so the
// reading is not ratiometric by itself: counts * 3.3 / (2/3) / 5.0 / 4096 =
// Vout / Vs. PICO_RATIO = 3.3 / (2/3) / 5.0 = 0.99, applied in Q16. A drift
// of VBUS shows up as an error of 0.92 * dVs / Vs / 0.007652 kPa (about
// 6 kPa per 5 %): calibrate on the board you use, and prefer the Uno where
// the ADC reference is the sensor supply.
#define PICO_RATIO_Q16 64881UL
#else
#error "cupmon.ino: board not supported (ATmega328P or RP2040)"
#endif

#if BOARD_CUPS > CM_MAX_CUPS
#error "CM_MAX_CUPS too small for this board"
#endif

static cm_dev_t dev;

// ---- HAL for the core ------------------------------------------------------

extern "C" {

uint32_t cm_hal_micros(void *)
{
    return micros();
}

uint16_t cm_hal_adc_read(void *, uint8_t cup)
{
    uint32_t raw = (uint32_t)analogRead(SENSOR_PIN[cup]);
#if defined(ARDUINO_ARCH_RP2040)
    raw = (raw * PICO_RATIO_Q16 + 32768UL) >> 16;
    if (raw > 4095UL) {
        raw = 4095UL;
    }
#endif
    return (uint16_t)raw;
}

void cm_hal_set_pump(void *, uint8_t cup, uint8_t on)
{
    digitalWrite(PUMP_PIN[cup], on ? HIGH : LOW);
}

void cm_hal_set_valve(void *, uint8_t cup, uint8_t open)
{
    digitalWrite(VALVE_PIN[cup], open ? LOW : HIGH); // energise to close
}

void cm_hal_uart_write(void *, const uint8_t *buf, uint8_t len)
{
    Serial.write(buf, len);
}

uint16_t cm_hal_uart_room(void *)
{
    int room = Serial.availableForWrite();
    return room > 0 ? (uint16_t)room : 0u;
}

uint8_t cm_hal_eeprom_read(void *, uint16_t addr)
{
    return EEPROM.read(addr);
}

uint8_t cm_hal_eeprom_write(void *, uint16_t addr, uint8_t value)
{
#if defined(ARDUINO_ARCH_AVR)
    if (addr > E2END) {
        return 1;
    }
    wdt_reset();
    EEPROM.update(addr, value);
    return 0;
#else
    // flash-emulated EEPROM: commit once per record, on its last byte
    if (addr >= BOARD_EEPROM_SIZE) {
        return 1;
    }
    EEPROM.write(addr, value);
    if ((addr - CM_EE_BASE) % CM_EE_STRIDE == CM_EE_STRIDE - 1u) {
        return EEPROM.commit() ? 0 : 1;
    }
    return 0;
#endif
}

} // extern "C"

// ---- setup / loop ------------------------------------------------------------

void setup()
{
    cm_config_t cfg;
    uint8_t reset_cause = 0;
#if defined(ARDUINO_ARCH_AVR)
    reset_cause = MCUSR; // 1 power-on, 2 external, 4 brown-out, 8 watchdog
    MCUSR = 0;
    wdt_disable();
#endif
    for (uint8_t i = 0; i < BOARD_CUPS; i++) {
        // outputs low before they become outputs: pump off, valve open
        digitalWrite(PUMP_PIN[i], LOW);
        digitalWrite(VALVE_PIN[i], LOW);
        pinMode(PUMP_PIN[i], OUTPUT);
        pinMode(VALVE_PIN[i], OUTPUT);
    }
    pinMode(STATUS_LED, OUTPUT);
#if defined(ARDUINO_ARCH_RP2040)
    analogReadResolution(12);
    EEPROM.begin(BOARD_EEPROM_SIZE);
#endif
    Serial.begin(115200);

    memset(&cfg, 0, sizeof(cfg));
    strncpy(cfg.serial, BOARD_SERIAL, sizeof(cfg.serial) - 1);
    cfg.n_cups = BOARD_CUPS;
    cfg.adc_bits = BOARD_ADC_BITS;
    cfg.sensor_model = CM_SENSOR_MPXV6115V;
    cfg.info_flags = 0;
    cfg.reset_cause = reset_cause;
    cm_init(&dev, &cfg, nullptr);

#if defined(ARDUINO_ARCH_AVR)
    wdt_enable(WDTO_250MS);
#else
    rp2040.wdt_begin(250);
#endif
}

void loop()
{
#if defined(ARDUINO_ARCH_AVR)
    wdt_reset();
#else
    rp2040.wdt_reset();
#endif
    while (Serial.available() > 0) {
        cm_rx_byte(&dev, (uint8_t)Serial.read());
    }
    cm_poll(&dev);

    uint8_t alarm = 0;
    for (uint8_t i = 0; i < dev.n_cups; i++) {
        alarm |= dev.cup[i].flags & (CM_CUP_INTERLOCK | CM_CUP_FAULT);
    }
    digitalWrite(STATUS_LED, alarm ? HIGH : LOW);
}
