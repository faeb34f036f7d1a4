/*
 * cupmon reference firmware: portable core (see cm_core.h, docs/firmware.md).
 */
#include "cm_core.h"

#include <string.h>

#if defined(__AVR__)
#include <avr/pgmspace.h>
#define CM_CONST_TABLE(decl) const decl PROGMEM
#define CM_TABLE_WORD(t, i) pgm_read_word(&(t)[i])
#else
#define CM_CONST_TABLE(decl) const decl
#define CM_TABLE_WORD(t, i) ((t)[i])
#endif

/* ---- CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection -------- */

static CM_CONST_TABLE(uint16_t cm_crc_table[256]) = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50A5, 0x60C6, 0x70E7,
    0x8108, 0x9129, 0xA14A, 0xB16B, 0xC18C, 0xD1AD, 0xE1CE, 0xF1EF,
    0x1231, 0x0210, 0x3273, 0x2252, 0x52B5, 0x4294, 0x72F7, 0x62D6,
    0x9339, 0x8318, 0xB37B, 0xA35A, 0xD3BD, 0xC39C, 0xF3FF, 0xE3DE,
    0x2462, 0x3443, 0x0420, 0x1401, 0x64E6, 0x74C7, 0x44A4, 0x5485,
    0xA56A, 0xB54B, 0x8528, 0x9509, 0xE5EE, 0xF5CF, 0xC5AC, 0xD58D,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76D7, 0x66F6, 0x5695, 0x46B4,
    0xB75B, 0xA77A, 0x9719, 0x8738, 0xF7DF, 0xE7FE, 0xD79D, 0xC7BC,
    0x48C4, 0x58E5, 0x6886, 0x78A7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xC9CC, 0xD9ED, 0xE98E, 0xF9AF, 0x8948, 0x9969, 0xA90A, 0xB92B,
    0x5AF5, 0x4AD4, 0x7AB7, 0x6A96, 0x1A71, 0x0A50, 0x3A33, 0x2A12,
    0xDBFD, 0xCBDC, 0xFBBF, 0xEB9E, 0x9B79, 0x8B58, 0xBB3B, 0xAB1A,
    0x6CA6, 0x7C87, 0x4CE4, 0x5CC5, 0x2C22, 0x3C03, 0x0C60, 0x1C41,
    0xEDAE, 0xFD8F, 0xCDEC, 0xDDCD, 0xAD2A, 0xBD0B, 0x8D68, 0x9D49,
    0x7E97, 0x6EB6, 0x5ED5, 0x4EF4, 0x3E13, 0x2E32, 0x1E51, 0x0E70,
    0xFF9F, 0xEFBE, 0xDFDD, 0xCFFC, 0xBF1B, 0xAF3A, 0x9F59, 0x8F78,
    0x9188, 0x81A9, 0xB1CA, 0xA1EB, 0xD10C, 0xC12D, 0xF14E, 0xE16F,
    0x1080, 0x00A1, 0x30C2, 0x20E3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83B9, 0x9398, 0xA3FB, 0xB3DA, 0xC33D, 0xD31C, 0xE37F, 0xF35E,
    0x02B1, 0x1290, 0x22F3, 0x32D2, 0x4235, 0x5214, 0x6277, 0x7256,
    0xB5EA, 0xA5CB, 0x95A8, 0x8589, 0xF56E, 0xE54F, 0xD52C, 0xC50D,
    0x34E2, 0x24C3, 0x14A0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405,
    0xA7DB, 0xB7FA, 0x8799, 0x97B8, 0xE75F, 0xF77E, 0xC71D, 0xD73C,
    0x26D3, 0x36F2, 0x0691, 0x16B0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xD94C, 0xC96D, 0xF90E, 0xE92F, 0x99C8, 0x89E9, 0xB98A, 0xA9AB,
    0x5844, 0x4865, 0x7806, 0x6827, 0x18C0, 0x08E1, 0x3882, 0x28A3,
    0xCB7D, 0xDB5C, 0xEB3F, 0xFB1E, 0x8BF9, 0x9BD8, 0xABBB, 0xBB9A,
    0x4A75, 0x5A54, 0x6A37, 0x7A16, 0x0AF1, 0x1AD0, 0x2AB3, 0x3A92,
    0xFD2E, 0xED0F, 0xDD6C, 0xCD4D, 0xBDAA, 0xAD8B, 0x9DE8, 0x8DC9,
    0x7C26, 0x6C07, 0x5C64, 0x4C45, 0x3CA2, 0x2C83, 0x1CE0, 0x0CC1,
    0xEF1F, 0xFF3E, 0xCF5D, 0xDF7C, 0xAF9B, 0xBFBA, 0x8FD9, 0x9FF8,
    0x6E17, 0x7E36, 0x4E55, 0x5E74, 0x2E93, 0x3EB2, 0x0ED1, 0x1EF0,
};

uint16_t cm_crc16(const uint8_t *data, uint16_t len, uint16_t crc)
{
    while (len--) {
        crc = (uint16_t)((crc << 8) ^ CM_TABLE_WORD(cm_crc_table, ((crc >> 8) ^ *data++) & 0xFFu));
    }
    return crc;
}

/* ---- little-endian helpers ---------------------------------------------- */

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | ((uint16_t)p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)get16(p) | ((uint32_t)get16(p + 2) << 16);
}

/* IEEE-754 binary32 on every supported target (AVR, ARM, x86). */
static void putf(uint8_t *p, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    put32(p, v);
}

static float getf(const uint8_t *p)
{
    uint32_t v = get32(p);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

/* ---- conversion, regulator ---------------------------------------------- */

int16_t cm_counts_to_centi(uint16_t counts, uint8_t bits)
{
    /* MPXV6115V: Vout = Vs (0.007652 P + 0.92), P kPa gauge; suction = -P.
     * With r8 = 8 * 65536 * Vout/Vs (counts scaled to 19 bits):
     *   suction[0.01 kPa] = (0.92 * 524288 - r8) * 100 / (0.007652 * 524288)
     *                     = (482344.96 - r8) * 3125 / 125370.37
     * rounded to the nearest 0.01 kPa; int32 throughout (|num| < 1.6e9). */
    int32_t r8 = (int32_t)((uint32_t)counts << (19u - bits));
    int32_t num = (int32_t)(482345L - r8) * (int32_t)3125;
    int32_t q = (int32_t)((num >= 0 ? num + (int32_t)62685 : num - (int32_t)62685) /
                          (int32_t)125370);
    return (int16_t)q;
}

uint8_t cm_regulate(uint8_t pump_on, int16_t s, int16_t low, int16_t high)
{
    /* on below low + q, off at or above high - q, q = (high - low) / 4;
     * multiplied by 4 so that the comparison is exact. */
    int32_t s4 = 4L * s;
    if (s4 < 3L * low + high) {
        return 1u;
    }
    if (s4 >= 3L * high + low) {
        return 0u;
    }
    return pump_on ? 1u : 0u;
}

/* ---- framing ------------------------------------------------------------ */

uint16_t cm_encode_frame(uint8_t *out, uint8_t type, uint16_t seq, uint32_t time_us,
                         const uint8_t *payload, uint8_t len)
{
    uint16_t crc;
    out[0] = CM_SYNC0;
    out[1] = CM_SYNC1;
    out[2] = CM_VERSION;
    out[3] = type;
    out[4] = len;
    put16(out + 5, seq);
    put32(out + 7, time_us);
    if (len) {
        memcpy(out + CM_HEADER_SIZE, payload, len);
    }
    crc = cm_crc16(out + 2, (uint16_t)(CM_HEADER_SIZE - 2u + len), 0xFFFFu);
    put16(out + CM_HEADER_SIZE + len, crc);
    return (uint16_t)(CM_HEADER_SIZE + CM_CRC_SIZE + len);
}

/* Send a frame; SAMPLE frames are dropped (and counted) when the UART has no
 * room, every other frame waits for room. Returns 1 if sent. */
static uint8_t send(cm_dev_t *d, uint8_t type, uint32_t t, const uint8_t *payload, uint8_t len)
{
    uint8_t frame[CM_TX_FRAME_MAX];
    uint16_t n;
    if (len > CM_TX_PAYLOAD_MAX) {
        return 0u; /* cannot happen: every payload we build fits */
    }
    if (type == CM_MSG_SAMPLE &&
        cm_hal_uart_room(d->hal) < (uint16_t)(CM_HEADER_SIZE + CM_CRC_SIZE + len)) {
        if (d->overrun != 0xFFFFu) {
            d->overrun++;
        }
        return 0u;
    }
    n = cm_encode_frame(frame, type, d->tx_seq, t, payload, len);
    d->tx_seq++;
    cm_hal_uart_write(d->hal, frame, (uint8_t)n);
    return 1u;
}

static void send_event(cm_dev_t *d, uint32_t t, uint8_t code, uint8_t cup, int16_t value)
{
    uint8_t p[4];
    p[0] = code;
    p[1] = cup;
    put16(p + 2, (uint16_t)value);
    send(d, CM_MSG_EVENT, t, p, 4u);
}

static void send_info(cm_dev_t *d, uint32_t t)
{
    uint8_t p[CM_INFO_LEN];
    memcpy(p, d->serial, 16);
    p[16] = CM_FW_MAJOR;
    p[17] = CM_FW_MINOR;
    p[18] = CM_FW_PATCH;
    p[19] = d->n_cups;
    put16(p + 20, d->rate_hz);
    p[22] = d->sensor_model;
    p[23] = d->info_flags;
    p[24] = d->adc_bits;
    put16(p + 25, (uint16_t)d->limit);
    send(d, CM_MSG_INFO, t, p, CM_INFO_LEN);
}

/* ---- EEPROM records ----------------------------------------------------- */
/* record i at CM_EE_BASE + i*CM_EE_STRIDE:
 *   0 i16 tare | 2 f32 c0 | 6 f32 c1 | 10 f32 c2 | 14 u8 flags | 15 u8 0 |
 *   16 u16 CRC-16/CCITT-FALSE over (layout, cup index, bytes 0..15)
 * A blank (0xFF) or foreign EEPROM fails the CRC: identity, no tare. */

static uint16_t ee_record_crc(uint8_t cup, const uint8_t *rec)
{
    uint8_t seed[2];
    seed[0] = CM_EE_LAYOUT;
    seed[1] = cup;
    return cm_crc16(rec, 16u, cm_crc16(seed, 2u, 0xFFFFu));
}

static void cup_identity(cm_cup_t *c)
{
    c->c0 = 0.0f;
    c->c1 = 1.0f;
    c->c2 = 0.0f;
    c->tare = 0;
    c->ee_flags = 0u;
    c->flags &= (uint8_t)~CM_CUP_CAL;
}

static void ee_load(cm_dev_t *d, uint8_t i)
{
    uint8_t rec[CM_EE_STRIDE];
    uint8_t k;
    uint16_t addr = (uint16_t)(CM_EE_BASE + (uint16_t)i * CM_EE_STRIDE);
    cm_cup_t *c = &d->cup[i];
    for (k = 0; k < CM_EE_STRIDE; k++) {
        rec[k] = cm_hal_eeprom_read(d->hal, (uint16_t)(addr + k));
    }
    cup_identity(c);
    if (ee_record_crc(i, rec) != get16(rec + 16)) {
        return;
    }
    c->ee_flags = rec[14];
    if (rec[14] & CM_EE_FLAG_TARE) {
        c->tare = (int16_t)get16(rec);
    }
    if (rec[14] & CM_EE_FLAG_CAL) {
        c->c0 = getf(rec + 2);
        c->c1 = getf(rec + 6);
        c->c2 = getf(rec + 10);
        c->flags |= CM_CUP_CAL;
    }
}

/* Write the record of cup i from the given values; read back to verify. */
static uint8_t ee_store(cm_dev_t *d, uint8_t i, int16_t tare, float c0, float c1, float c2,
                        uint8_t ee_flags)
{
    uint8_t rec[CM_EE_STRIDE];
    uint8_t k;
    uint16_t addr = (uint16_t)(CM_EE_BASE + (uint16_t)i * CM_EE_STRIDE);
    put16(rec, (uint16_t)tare);
    putf(rec + 2, c0);
    putf(rec + 6, c1);
    putf(rec + 10, c2);
    rec[14] = ee_flags;
    rec[15] = 0u;
    put16(rec + 16, ee_record_crc(i, rec));
    for (k = 0; k < CM_EE_STRIDE; k++) {
        if (cm_hal_eeprom_write(d->hal, (uint16_t)(addr + k), rec[k]) != 0u ||
            cm_hal_eeprom_read(d->hal, (uint16_t)(addr + k)) != rec[k]) {
            return 0u;
        }
    }
    return 1u;
}

/* ---- outputs ------------------------------------------------------------ */

static void apply_outputs(cm_dev_t *d, uint8_t i)
{
    uint8_t f = d->cup[i].flags;
    cm_hal_set_pump(d->hal, i, (f & CM_CUP_PUMP) ? 1u : 0u);
    cm_hal_set_valve(d->hal, i, (f & CM_CUP_VALVE_OPEN) ? 1u : 0u);
}

static uint8_t cup_status(const cm_cup_t *c)
{
    uint8_t f = c->flags;
    uint8_t s = 0u;
    if (f & CM_CUP_PUMP) {
        s |= CM_ST_PUMP_ON;
    }
    if (f & CM_CUP_VALVE_OPEN) {
        s |= CM_ST_VALVE_OPEN;
    }
    if (f & CM_CUP_FAULT) {
        s |= CM_ST_SENSOR_FAULT;
    }
    if (f & CM_CUP_REGULATING) {
        s |= CM_ST_REGULATING;
    }
    if (f & CM_CUP_INTERLOCK) {
        s |= CM_ST_INTERLOCK;
    }
    if (f & CM_CUP_CAL) {
        s |= CM_ST_CALIBRATED;
    }
    return s;
}

static void set_rate(cm_dev_t *d, uint16_t hz)
{
    uint32_t n = ((uint32_t)hz * CM_STUCK_S_NUM + CM_STUCK_S_DEN / 2u) / CM_STUCK_S_DEN;
    d->stuck_n = (uint16_t)(n < CM_STUCK_MIN_SAMPLES ? CM_STUCK_MIN_SAMPLES : n);
    n = ((uint32_t)hz * CM_CLEAR_S_NUM + CM_CLEAR_S_DEN / 2u) / CM_CLEAR_S_DEN;
    d->clear_n = (uint16_t)(n < 1u ? 1u : n);
    d->rate_hz = hz;
    d->period_us = 1000000uL / hz;
    d->period_rem = (uint16_t)(1000000uL % hz);
    d->rem_acc = 0u;
}

/* ---- init --------------------------------------------------------------- */

void cm_init(cm_dev_t *d, const cm_config_t *cfg, void *hal)
{
    uint8_t i;
    uint32_t now;
    int16_t low = CM_DEFAULT_LOW, high = CM_DEFAULT_HIGH;
    memset(d, 0, sizeof(*d));
    d->hal = hal;
    memcpy(d->serial, cfg->serial, 16);
    d->n_cups = cfg->n_cups < 1u ? 1u : (cfg->n_cups > CM_MAX_CUPS ? CM_MAX_CUPS : cfg->n_cups);
    d->adc_bits = cfg->adc_bits < 8u ? 8u : (cfg->adc_bits > 16u ? 16u : cfg->adc_bits);
    d->sensor_model = cfg->sensor_model;
    d->info_flags = (uint8_t)(cfg->info_flags | CM_INFO_CAL_ON_DEVICE);
    d->limit = (cfg->limit >= CM_LIMIT_MIN && cfg->limit <= CM_LIMIT_MAX) ? cfg->limit
                                                                          : CM_DEFAULT_LIMIT;
    if (cfg->band_low >= 0 && cfg->band_low < cfg->band_high && cfg->band_high <= d->limit) {
        low = cfg->band_low;
        high = cfg->band_high;
    } else if (CM_DEFAULT_HIGH > d->limit) {
        d->limit = CM_DEFAULT_LIMIT; /* a limit under the default band: keep both default */
    }
    set_rate(d, (cfg->rate_hz >= CM_MIN_RATE_HZ && cfg->rate_hz <= CM_MAX_RATE_HZ)
                    ? cfg->rate_hz
                    : CM_DEFAULT_RATE_HZ);
    for (i = 0; i < d->n_cups; i++) {
        cm_cup_t *c = &d->cup[i];
        c->low = low;
        c->high = high;
        c->reading = CM_NO_READING;
        c->untared = CM_NO_READING;
        c->flags = CM_CUP_VALVE_OPEN; /* idle: pump off, cup vented */
        ee_load(d, i);
        apply_outputs(d, i);
    }
    now = cm_hal_micros(d->hal);
    d->next_us = now;
    d->overrun_us = now;
    send_info(d, now);
    send_event(d, now, CM_EV_BOOT, 0u, cfg->reset_cause);
}

uint32_t cm_next_sample_us(const cm_dev_t *d)
{
    return d->next_us;
}

/* ---- the sample / control tick ------------------------------------------ */

static void cup_tick(cm_dev_t *d, uint8_t i, uint32_t now)
{
    cm_cup_t *c = &d->cup[i];
    uint16_t counts = cm_hal_adc_read(d->hal, i);
    int16_t raw = cm_counts_to_centi(counts, d->adc_bits);
    uint8_t was_fault = (uint8_t)(c->flags & CM_CUP_FAULT);
    uint8_t in_range = (uint8_t)(raw >= CM_RANGE_LOW && raw <= CM_RANGE_HIGH);
    uint8_t sign;

    /* sensor checks: out of range now, or the same counts for too long while
     * the pump is driven (moving air must move a live sensor; a sealed cup at
     * rest may read the same counts for minutes). Once faulted, repeats keep
     * counting with the pump off, so a stuck sensor stays faulted until its
     * counts change instead of letting the pump run blind again. */
    if (counts == c->last_counts && ((c->flags & CM_CUP_PUMP) || was_fault)) {
        if (c->same_run != 0xFFFFu) {
            c->same_run++;
        }
    } else {
        c->same_run = 0u;
    }
    c->last_counts = counts;
    sign = (uint8_t)(!in_range || (uint32_t)c->same_run + 1u >= d->stuck_n);
    if (sign) {
        c->flags |= CM_CUP_FAULT;
        c->clean_run = 0u;
    } else if (was_fault && ++c->clean_run >= d->clear_n) {
        c->flags &= (uint8_t)~CM_CUP_FAULT;
    }

    if (in_range) {
        int32_t s = raw;
        if (c->flags & CM_CUP_CAL) {
            float x = (float)s * 0.01f;
            float y = (c->c0 + x * (c->c1 + c->c2 * x)) * 100.0f;
            if (!(y < 32767.0f)) { /* also catches NaN */
                y = 32767.0f;
            } else if (y < -32767.0f) {
                y = -32767.0f;
            }
            s = (int32_t)(y >= 0.0f ? y + 0.5f : y - 0.5f);
        }
        c->untared = (int16_t)s;
        s -= c->tare;
        c->reading = (int16_t)(s > 32767L ? 32767L : (s < -32767L ? -32767L : s));
    } else {
        c->reading = CM_NO_READING;
        c->untared = CM_NO_READING;
    }

    if (c->flags & CM_CUP_FAULT) {
        c->flags &= (uint8_t)~CM_CUP_PUMP;
        if (!was_fault) { /* value: the raw (untared, uncalibrated) suction */
            send_event(d, now, CM_EV_SENSOR_FAULT, (uint8_t)(i + 1u), raw);
        }
    } else {
        if (was_fault) {
            send_event(d, now, CM_EV_SENSOR_OK, (uint8_t)(i + 1u), 0);
        }
        /* interlock: vent above the hard limit, latched until START; it
         * applies whether or not the cup is regulating (a holding cup's
         * suction rises when ambient pressure rises) */
        if (c->reading > d->limit && !(c->flags & CM_CUP_INTERLOCK)) {
            c->flags = (uint8_t)((c->flags & ~(CM_CUP_REGULATING | CM_CUP_PUMP)) |
                                 CM_CUP_INTERLOCK | CM_CUP_VALVE_OPEN);
            apply_outputs(d, i);
            send_event(d, now, CM_EV_INTERLOCK_TRIPPED, (uint8_t)(i + 1u), c->reading);
        }
        if (c->flags & CM_CUP_REGULATING) {
            if (cm_regulate((uint8_t)(c->flags & CM_CUP_PUMP), c->reading, c->low, c->high)) {
                c->flags |= CM_CUP_PUMP;
            } else {
                c->flags &= (uint8_t)~CM_CUP_PUMP;
            }
        }
    }
    apply_outputs(d, i);
}

static void sample_tick(cm_dev_t *d, uint32_t now)
{
    uint8_t p[CM_SAMPLE_LEN(CM_MAX_CUPS)];
    uint8_t i, n = d->n_cups;
    p[0] = n;
    for (i = 0; i < n; i++) {
        cup_tick(d, i, now);
        put16(p + 1 + 2u * i, (uint16_t)d->cup[i].reading);
        p[1 + 2u * n + i] = cup_status(&d->cup[i]);
    }
    send(d, CM_MSG_SAMPLE, now, p, (uint8_t)CM_SAMPLE_LEN(n));
}

static void advance_schedule(cm_dev_t *d)
{
    d->next_us += d->period_us;
    d->rem_acc = (uint16_t)(d->rem_acc + d->period_rem);
    if (d->rem_acc >= d->rate_hz) {
        d->rem_acc = (uint16_t)(d->rem_acc - d->rate_hz);
        d->next_us++;
    }
}

void cm_poll(cm_dev_t *d)
{
    uint32_t now = cm_hal_micros(d->hal);

    if (d->host_state == 1u && (uint32_t)(now - d->last_host_us) >= CM_HOST_LOST_US) {
        /* the host went away: keep regulating and keep the interlock; say so
         * once (again after the host has come back and gone again) */
        d->host_state = 2u;
        send_event(d, now, CM_EV_HOST_LOST, 0u, 0);
    }
    if ((int32_t)(now - d->next_us) < 0) {
        return;
    }
    advance_schedule(d);
    while ((int32_t)(now - d->next_us) >= 0) { /* slots we were too late for */
        advance_schedule(d);
        if (d->overrun != 0xFFFFu) {
            d->overrun++;
        }
    }
    sample_tick(d, now);
    if (d->overrun && (uint32_t)(now - d->overrun_us) >= CM_OVERRUN_REPORT_US) {
        send_event(d, now, CM_EV_OVERRUN, 0u,
                   (int16_t)(d->overrun > 32767u ? 32767u : d->overrun));
        d->overrun = 0u;
        d->overrun_us = now;
    }
}

/* ---- commands ----------------------------------------------------------- */

typedef struct {
    uint8_t type; /* CM_MSG_ACK or CM_MSG_NACK */
    uint8_t len;  /* ACK: bytes of data after seq+type */
    uint8_t data[CM_RESP_MAX - 3u];
} cm_resp_t;

static uint8_t nack(cm_resp_t *r, uint8_t reason)
{
    r->type = CM_MSG_NACK;
    r->data[0] = reason;
    r->len = 1u;
    return 0u;
}

/* The cups a mask selects; 0 when it selects a cup that does not exist
 * (0xFFFF means every cup). */
static uint16_t mask_cups(const cm_dev_t *d, uint16_t mask)
{
    uint16_t all = (uint16_t)(d->n_cups >= 16u ? 0xFFFFu : ((1u << d->n_cups) - 1u));
    if (mask == CM_ALL_CUPS) {
        return all;
    }
    if (mask == 0u || (mask & (uint16_t)~all)) {
        return 0u;
    }
    return mask;
}

static void execute(cm_dev_t *d, uint8_t type, const uint8_t *p, uint8_t len, uint32_t now,
                    cm_resp_t *r)
{
    static const uint8_t lengths[] = {
        0u,  /* PING */
        0u,  /* GET_INFO */
        2u,  /* START */
        2u,  /* STOP */
        6u,  /* SET_BAND */
        2u,  /* VENT */
        2u,  /* ZERO */
        2u,  /* SET_RATE */
        13u, /* WRITE_CAL */
        1u,  /* READ_CAL */
        2u,  /* SET_LIMIT */
    };
    uint16_t cups = 0u;
    uint8_t i;

    r->type = CM_MSG_ACK;
    r->len = 0u;
    if (type < CM_MSG_PING || type > CM_MSG_SET_LIMIT) {
        nack(r, CM_NACK_UNKNOWN_COMMAND);
        return;
    }
    if (len != lengths[type - CM_MSG_PING]) {
        nack(r, CM_NACK_BAD_LENGTH);
        return;
    }
    switch (type) {
    case CM_MSG_START:
    case CM_MSG_STOP:
    case CM_MSG_SET_BAND:
    case CM_MSG_VENT:
    case CM_MSG_ZERO:
        cups = mask_cups(d, get16(p));
        if (!cups) {
            nack(r, CM_NACK_BAD_CUP);
            return;
        }
        break;
    default:
        break;
    }

    switch (type) {
    case CM_MSG_PING:
    case CM_MSG_GET_INFO: /* INFO follows the ACK */
        break;

    case CM_MSG_START:
        /* all or nothing: a cup without a valid reading cannot regulate */
        for (i = 0; i < d->n_cups; i++) {
            if ((cups >> i) & 1u && (d->cup[i].flags & CM_CUP_FAULT)) {
                nack(r, CM_NACK_SENSOR_FAULT);
                return;
            }
        }
        for (i = 0; i < d->n_cups; i++) {
            cm_cup_t *c = &d->cup[i];
            if (!((cups >> i) & 1u)) {
                continue;
            }
            if (c->flags & CM_CUP_INTERLOCK) {
                c->flags &= (uint8_t)~CM_CUP_INTERLOCK;
                send_event(d, now, CM_EV_INTERLOCK_CLEARED, (uint8_t)(i + 1u), 0);
            }
            c->flags = (uint8_t)((c->flags | CM_CUP_REGULATING) & ~CM_CUP_VALVE_OPEN);
            apply_outputs(d, i); /* the pump follows at the next sample */
        }
        break;

    case CM_MSG_STOP:
        /* pump off, valve closed so the cup holds; a latched cup stays
         * vented. Never refused: "stop everything" must always work. */
        for (i = 0; i < d->n_cups; i++) {
            cm_cup_t *c = &d->cup[i];
            if ((cups >> i) & 1u) {
                c->flags &= (uint8_t)~(CM_CUP_REGULATING | CM_CUP_PUMP);
                if (!(c->flags & CM_CUP_INTERLOCK)) {
                    c->flags &= (uint8_t)~CM_CUP_VALVE_OPEN;
                }
                apply_outputs(d, i);
            }
        }
        break;

    case CM_MSG_VENT:
        for (i = 0; i < d->n_cups; i++) {
            cm_cup_t *c = &d->cup[i];
            if ((cups >> i) & 1u) {
                c->flags = (uint8_t)((c->flags & ~(CM_CUP_REGULATING | CM_CUP_PUMP)) |
                                     CM_CUP_VALVE_OPEN);
                apply_outputs(d, i);
            }
        }
        break;

    case CM_MSG_SET_BAND: {
        int16_t low = (int16_t)get16(p + 2);
        int16_t high = (int16_t)get16(p + 4);
        if (low < 0 || low >= high || high > d->limit) {
            nack(r, CM_NACK_OUT_OF_RANGE);
            return;
        }
        for (i = 0; i < d->n_cups; i++) {
            if ((cups >> i) & 1u) {
                d->cup[i].low = low;
                d->cup[i].high = high;
            }
        }
        break;
    }

    case CM_MSG_ZERO:
        /* tare only a cup at rest near ambient with a good reading */
        for (i = 0; i < d->n_cups; i++) {
            const cm_cup_t *c = &d->cup[i];
            if (!((cups >> i) & 1u)) {
                continue;
            }
            if ((c->flags & CM_CUP_FAULT) || c->untared == CM_NO_READING) {
                nack(r, CM_NACK_SENSOR_FAULT);
                return;
            }
            if (c->flags & (CM_CUP_REGULATING | CM_CUP_PUMP)) {
                nack(r, CM_NACK_BUSY);
                return;
            }
            if (c->untared > CM_TARE_MAX || c->untared < -CM_TARE_MAX) {
                nack(r, CM_NACK_OUT_OF_RANGE);
                return;
            }
        }
        for (i = 0; i < d->n_cups; i++) {
            cm_cup_t *c = &d->cup[i];
            uint8_t ee = (uint8_t)(c->ee_flags | CM_EE_FLAG_TARE);
            if (!((cups >> i) & 1u)) {
                continue;
            }
            if (!ee_store(d, i, c->untared, c->c0, c->c1, c->c2, ee)) {
                ee_load(d, i); /* keep what storage really holds */
                nack(r, CM_NACK_STORAGE);
                return;
            }
            c->tare = c->untared;
            c->ee_flags = ee;
        }
        break;

    case CM_MSG_SET_RATE: {
        uint16_t hz = get16(p);
        if (hz < CM_MIN_RATE_HZ || hz > CM_MAX_RATE_HZ) {
            nack(r, CM_NACK_OUT_OF_RANGE);
            return;
        }
        set_rate(d, hz);
        d->next_us = now + d->period_us;
        break;
    }

    case CM_MSG_WRITE_CAL: {
        uint8_t cup = p[0];
        float c0 = getf(p + 1), c1 = getf(p + 5), c2 = getf(p + 9);
        cm_cup_t *c;
        uint8_t ee;
        if (cup < 1u || cup > d->n_cups) {
            nack(r, CM_NACK_BAD_CUP);
            return;
        }
        /* plausibility (also rejects NaN and infinities) */
        if (!(c0 >= -20.0f && c0 <= 20.0f && c1 >= 0.5f && c1 <= 2.0f && c2 >= -0.01f &&
              c2 <= 0.01f)) {
            nack(r, CM_NACK_OUT_OF_RANGE);
            return;
        }
        c = &d->cup[cup - 1u];
        if (c->flags & (CM_CUP_REGULATING | CM_CUP_PUMP)) {
            nack(r, CM_NACK_BUSY);
            return;
        }
        ee = (uint8_t)(c->ee_flags | CM_EE_FLAG_CAL);
        if (!ee_store(d, (uint8_t)(cup - 1u), c->tare, c0, c1, c2, ee)) {
            ee_load(d, (uint8_t)(cup - 1u));
            nack(r, CM_NACK_STORAGE);
            return;
        }
        c->c0 = c0;
        c->c1 = c1;
        c->c2 = c2;
        c->ee_flags = ee;
        c->flags |= CM_CUP_CAL;
        break;
    }

    case CM_MSG_READ_CAL: {
        uint8_t cup = p[0];
        const cm_cup_t *c;
        if (cup < 1u || cup > d->n_cups) {
            nack(r, CM_NACK_BAD_CUP);
            return;
        }
        c = &d->cup[cup - 1u];
        r->data[0] = cup;
        putf(r->data + 1, c->c0);
        putf(r->data + 5, c->c1);
        putf(r->data + 9, c->c2);
        r->data[13] = (c->flags & CM_CUP_CAL) ? 1u : 0u;
        r->len = 14u;
        break;
    }

    case CM_MSG_SET_LIMIT: {
        int16_t lim = (int16_t)get16(p);
        if (lim < CM_LIMIT_MIN || lim > CM_LIMIT_MAX) {
            nack(r, CM_NACK_OUT_OF_RANGE);
            return;
        }
        for (i = 0; i < d->n_cups; i++) {
            if (d->cup[i].high > lim) { /* a band must fit under the limit */
                nack(r, CM_NACK_OUT_OF_RANGE);
                return;
            }
        }
        d->limit = lim;
        break;
    }

    default:
        break;
    }
}

uint8_t cm_local_command(cm_dev_t *d, uint8_t type, const uint8_t *payload, uint8_t len)
{
    cm_resp_t r;
    execute(d, type, payload, len, cm_hal_micros(d->hal), &r);
    if (r.type == CM_MSG_ACK) {
        return 0u;
    }
    return r.data[0];
}

static void send_response(cm_dev_t *d, uint32_t now)
{
    send(d, d->last_resp_type, now, d->last_resp, d->last_resp_len);
    if (d->last_type == CM_MSG_GET_INFO && d->last_resp_type == CM_MSG_ACK) {
        send_info(d, now);
    }
}

static void handle_frame(cm_dev_t *d, const uint8_t *f)
{
    uint8_t type = f[3];
    uint8_t len = f[4];
    uint16_t seq = get16(f + 5);
    const uint8_t *p = f + CM_HEADER_SIZE;
    uint16_t pcrc = cm_crc16(p, len, 0xFFFFu);
    uint32_t now = cm_hal_micros(d->hal);
    cm_resp_t r;

    d->last_host_us = now;
    d->host_state = 1u;

    if (d->have_last && seq == d->last_seq && type == d->last_type && pcrc == d->last_pcrc) {
        /* a retry of the command we executed last: same answer, no re-run */
        send_response(d, now);
        return;
    }
    execute(d, type, p, len, now, &r);
    d->have_last = 1u;
    d->last_seq = seq;
    d->last_type = type;
    d->last_pcrc = pcrc;
    d->last_resp_type = r.type;
    put16(d->last_resp, seq);
    d->last_resp[2] = type;
    memcpy(d->last_resp + 3, r.data, r.len);
    d->last_resp_len = (uint8_t)(3u + r.len);
    send_response(d, now);
}

/* ---- incremental parser ------------------------------------------------- */
/* rx_buf holds a candidate frame; after each byte the prefix is checked
 * (sync, version, length that fits); a bad prefix or a bad CRC drops the
 * first byte and re-checks the rest, exactly like the host's decoder
 * "skip one byte and search again". */

static uint8_t prefix_state(const cm_dev_t *d)
{
    /* 0 = bad, 1 = plausible so far, 2 = complete and CRC good */
    uint8_t n = d->rx_n;
    const uint8_t *b = d->rx_buf;
    uint8_t total;
    if (n >= 1u && b[0] != CM_SYNC0) {
        return 0u;
    }
    if (n >= 2u && b[1] != CM_SYNC1) {
        return 0u;
    }
    if (n >= 3u && b[2] != CM_VERSION) {
        return 0u;
    }
    if (n < 5u) {
        return 1u;
    }
    if (b[4] > CM_RX_MAX_PAYLOAD) {
        return 0u;
    }
    total = (uint8_t)(CM_HEADER_SIZE + CM_CRC_SIZE + b[4]);
    if (n < total) {
        return 1u;
    }
    if (cm_crc16(b + 2, (uint16_t)(total - 4u), 0xFFFFu) != get16(b + total - 2u)) {
        return 0u;
    }
    return 2u;
}

void cm_rx_byte(cm_dev_t *d, uint8_t byte)
{
    d->rx_buf[d->rx_n++] = byte;
    while (d->rx_n) {
        uint8_t st = prefix_state(d);
        uint8_t used;
        if (st == 1u) {
            return; /* a plausible frame so far: wait for more */
        }
        if (st == 2u) {
            /* a good frame; bytes after it (left over from a rescan) are
             * kept and scanned next */
            used = (uint8_t)(CM_HEADER_SIZE + CM_CRC_SIZE + d->rx_buf[4]);
            handle_frame(d, d->rx_buf);
        } else {
            used = 1u; /* resynchronise: drop one byte, look again */
        }
        d->rx_n = (uint8_t)(d->rx_n - used);
        memmove(d->rx_buf, d->rx_buf + used, d->rx_n);
    }
}
