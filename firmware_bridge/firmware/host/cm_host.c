/*
 * Host "board" for the cupmon C core: the HAL in memory, so that Python
 * (firmware_bridge/cfirmware.py, via ctypes) can drive the real core with
 * simulated time, ADC counts and EEPROM, and read back the bytes it sends
 * and the pump/valve outputs it drives. Built as a shared library together
 * with ../cupmon/cm_core.c; never part of a device build.
 *
 * No malloc: the caller allocates cm_host_size() bytes.
 */
#include <string.h>

#include "../cupmon/cm_core.h"

#define CM_HOST_OUT_CAP 65536u
#define CM_HOST_EEPROM 1024u

typedef struct cm_host {
    cm_dev_t dev;
    uint32_t now;
    uint32_t out_len;
    uint32_t out_dropped;
    uint32_t tx_room;
    uint32_t eeprom_writes;
    uint16_t adc[CM_MAX_CUPS];
    uint8_t pump[CM_MAX_CUPS];
    uint8_t valve[CM_MAX_CUPS];
    uint8_t eeprom_fail;
    uint8_t eeprom[CM_HOST_EEPROM];
    uint8_t out[CM_HOST_OUT_CAP];
} cm_host_t;

/* ---- HAL ---------------------------------------------------------------- */

uint32_t cm_hal_micros(void *hal)
{
    return ((cm_host_t *)hal)->now;
}

uint16_t cm_hal_adc_read(void *hal, uint8_t cup)
{
    return ((cm_host_t *)hal)->adc[cup];
}

void cm_hal_set_pump(void *hal, uint8_t cup, uint8_t on)
{
    ((cm_host_t *)hal)->pump[cup] = on;
}

void cm_hal_set_valve(void *hal, uint8_t cup, uint8_t open)
{
    ((cm_host_t *)hal)->valve[cup] = open;
}

void cm_hal_uart_write(void *hal, const uint8_t *buf, uint8_t len)
{
    cm_host_t *h = (cm_host_t *)hal;
    if (h->out_len + len > CM_HOST_OUT_CAP) {
        h->out_dropped += len;
        return;
    }
    memcpy(h->out + h->out_len, buf, len);
    h->out_len += len;
}

uint16_t cm_hal_uart_room(void *hal)
{
    cm_host_t *h = (cm_host_t *)hal;
    return (uint16_t)(h->tx_room > 0xFFFFu ? 0xFFFFu : h->tx_room);
}

uint8_t cm_hal_eeprom_read(void *hal, uint16_t addr)
{
    cm_host_t *h = (cm_host_t *)hal;
    return addr < CM_HOST_EEPROM ? h->eeprom[addr] : 0xFFu;
}

uint8_t cm_hal_eeprom_write(void *hal, uint16_t addr, uint8_t value)
{
    cm_host_t *h = (cm_host_t *)hal;
    if (h->eeprom_fail || addr >= CM_HOST_EEPROM) {
        return 1u;
    }
    h->eeprom[addr] = value;
    h->eeprom_writes++;
    return 0u;
}

/* ---- API for ctypes ------------------------------------------------------ */

uint32_t cm_host_size(void)
{
    return (uint32_t)sizeof(cm_host_t);
}

uint32_t cm_host_max_cups(void)
{
    return CM_MAX_CUPS;
}

uint32_t cm_host_eeprom_size(void)
{
    return CM_HOST_EEPROM;
}

/* Blank board: EEPROM erased (0xFF), all ADC inputs at 0 counts. */
void cm_host_reset(cm_host_t *h)
{
    memset(h, 0, sizeof(*h));
    memset(h->eeprom, 0xFF, sizeof(h->eeprom));
    h->tx_room = 0xFFFFu;
}

uint8_t *cm_host_eeprom(cm_host_t *h)
{
    return h->eeprom;
}

/* Power-on: the core boots with the EEPROM as it is now. */
void cm_host_boot(cm_host_t *h, uint32_t now_us, const char *serial, uint8_t n_cups,
                  uint8_t adc_bits, uint8_t sensor_model, uint8_t info_flags, uint8_t reset_cause,
                  uint16_t rate_hz, int16_t band_low, int16_t band_high, int16_t limit)
{
    cm_config_t cfg;
    uint32_t i;
    memset(&cfg, 0, sizeof(cfg));
    for (i = 0; i < sizeof(cfg.serial) && serial[i]; i++) {
        cfg.serial[i] = serial[i];
    }
    cfg.n_cups = n_cups;
    cfg.adc_bits = adc_bits;
    cfg.sensor_model = sensor_model;
    cfg.info_flags = info_flags;
    cfg.reset_cause = reset_cause;
    cfg.rate_hz = rate_hz;
    cfg.band_low = band_low;
    cfg.band_high = band_high;
    cfg.limit = limit;
    h->now = now_us;
    cm_init(&h->dev, &cfg, h);
}

void cm_host_set_time(cm_host_t *h, uint32_t now_us)
{
    h->now = now_us;
}

void cm_host_set_adc(cm_host_t *h, const uint16_t *counts, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n && i < CM_MAX_CUPS; i++) {
        h->adc[i] = counts[i];
    }
}

void cm_host_poll(cm_host_t *h)
{
    cm_poll(&h->dev);
}

/* One control step: set the clock and the ADC inputs, poll, read outputs. */
void cm_host_step(cm_host_t *h, uint32_t now_us, const uint16_t *counts, uint32_t n,
                  uint8_t *pump, uint8_t *valve)
{
    uint32_t i;
    h->now = now_us;
    cm_host_set_adc(h, counts, n);
    cm_poll(&h->dev);
    for (i = 0; i < n && i < CM_MAX_CUPS; i++) {
        pump[i] = h->pump[i];
        valve[i] = h->valve[i];
    }
}

void cm_host_rx(cm_host_t *h, const uint8_t *data, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        cm_rx_byte(&h->dev, data[i]);
    }
}

uint32_t cm_host_take(cm_host_t *h, uint8_t *buf, uint32_t cap)
{
    uint32_t n = h->out_len < cap ? h->out_len : cap;
    memcpy(buf, h->out, n);
    memmove(h->out, h->out + n, h->out_len - n);
    h->out_len -= n;
    return n;
}

void cm_host_outputs(const cm_host_t *h, uint8_t *pump, uint8_t *valve, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n && i < CM_MAX_CUPS; i++) {
        pump[i] = h->pump[i];
        valve[i] = h->valve[i];
    }
}

uint32_t cm_host_next_sample_us(const cm_host_t *h)
{
    return cm_next_sample_us(&h->dev);
}

uint8_t cm_host_local(cm_host_t *h, uint8_t type, const uint8_t *payload, uint8_t len)
{
    return cm_local_command(&h->dev, type, payload, len);
}

uint32_t cm_host_rate_hz(const cm_host_t *h)
{
    return h->dev.rate_hz;
}

void cm_host_set_tx_room(cm_host_t *h, uint32_t room)
{
    h->tx_room = room;
}

void cm_host_set_eeprom_fail(cm_host_t *h, uint8_t fail)
{
    h->eeprom_fail = fail;
}

uint32_t cm_host_out_dropped(const cm_host_t *h)
{
    return h->out_dropped;
}

uint32_t cm_host_eeprom_writes(const cm_host_t *h)
{
    return h->eeprom_writes;
}
