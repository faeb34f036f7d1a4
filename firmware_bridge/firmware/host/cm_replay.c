/*
 * Replays a recorded session (firmware_bridge.cfirmware.CoreDevice with
 * record=True) through the core on the host board and writes every byte the
 * core sends to stdout. Built with AddressSanitizer and UBSan by
 * cfirmware.replay(), for any CM_MAX_CUPS, so the exact buffer sizes of a
 * device image are checked for memory errors on the host.
 *
 * Script records (little-endian), one letter each:
 *   C u8 cups, u8 adc_bits, u8 model, u8 flags, 16 serial,
 *     u16 rate, i16 band low, i16 band high, i16 limit         config (first)
 *   W u16 n, n bytes       EEPROM contents from address 0
 *   B u32 t, u8 cause      boot at time t
 *   S u32 t                set the clock
 *   A u8 n, n x u16        set the ADC inputs
 *   P                      poll
 *   R u16 n, n bytes       bytes from the host
 *   X u32 room             UART room
 *   F u8 fail              EEPROM writes fail (1) or work (0)
 *   L u8 type, u8 n, n bytes   a local command (cm_local_command)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cupmon/cm_core.h"

/* from cm_host.c */
typedef struct cm_host cm_host_t;
uint32_t cm_host_size(void);
void cm_host_reset(cm_host_t *h);
uint8_t *cm_host_eeprom(cm_host_t *h);
uint32_t cm_host_eeprom_size(void);
void cm_host_boot(cm_host_t *h, uint32_t now_us, const char *serial, uint8_t n_cups,
                  uint8_t adc_bits, uint8_t sensor_model, uint8_t info_flags, uint8_t reset_cause,
                  uint16_t rate_hz, int16_t band_low, int16_t band_high, int16_t limit);
void cm_host_set_time(cm_host_t *h, uint32_t now_us);
void cm_host_set_adc(cm_host_t *h, const uint16_t *counts, uint32_t n);
void cm_host_poll(cm_host_t *h);
void cm_host_rx(cm_host_t *h, const uint8_t *data, uint32_t n);
uint32_t cm_host_take(cm_host_t *h, uint8_t *buf, uint32_t cap);
void cm_host_set_tx_room(cm_host_t *h, uint32_t room);
void cm_host_set_eeprom_fail(cm_host_t *h, uint8_t fail);
uint8_t cm_host_local(cm_host_t *h, uint8_t type, const uint8_t *payload, uint8_t len);
uint32_t cm_host_out_dropped(const cm_host_t *h);

static int get(void *p, size_t n)
{
    return fread(p, 1, n, stdin) == n;
}

static uint32_t u32(const uint8_t *b)
{
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

static void flush_out(cm_host_t *h)
{
    uint8_t buf[4096];
    uint32_t n;
    while ((n = cm_host_take(h, buf, sizeof(buf))) != 0) {
        fwrite(buf, 1, n, stdout);
    }
}

int main(void)
{
    cm_host_t *h = (cm_host_t *)calloc(1, cm_host_size());
    uint8_t cfg[4] = {1, 10, 0, 0};
    uint8_t set[8] = {0};
    char serial[17] = {0};
    int c;
    if (!h) {
        return 3;
    }
    cm_host_reset(h);
    while ((c = getchar()) != EOF) {
        uint8_t b[65536];
        uint16_t counts[16];
        uint32_t n, i;
        switch (c) {
        case 'C':
            if (!get(cfg, 4) || !get(serial, 16) || !get(set, 8)) {
                return 2;
            }
            break;
        case 'W':
            if (!get(b, 2)) {
                return 2;
            }
            n = (uint32_t)b[0] | ((uint32_t)b[1] << 8);
            if (n > cm_host_eeprom_size() || !get(cm_host_eeprom(h), n)) {
                return 2;
            }
            break;
        case 'B':
            if (!get(b, 5)) {
                return 2;
            }
            cm_host_boot(h, u32(b), serial, cfg[0], cfg[1], cfg[2], cfg[3], b[4],
                         (uint16_t)(set[0] | (set[1] << 8)), (int16_t)(set[2] | (set[3] << 8)),
                         (int16_t)(set[4] | (set[5] << 8)), (int16_t)(set[6] | (set[7] << 8)));
            break;
        case 'S':
            if (!get(b, 4)) {
                return 2;
            }
            cm_host_set_time(h, u32(b));
            break;
        case 'A':
            if (!get(b, 1) || b[0] > 16u) {
                return 2;
            }
            n = b[0];
            if (!get(b, 2u * n)) {
                return 2;
            }
            for (i = 0; i < n; i++) {
                counts[i] = (uint16_t)(b[2 * i] | (b[2 * i + 1] << 8));
            }
            cm_host_set_adc(h, counts, n);
            break;
        case 'P':
            cm_host_poll(h);
            break;
        case 'R':
            if (!get(b, 2)) {
                return 2;
            }
            n = (uint32_t)b[0] | ((uint32_t)b[1] << 8);
            if (!get(b, n)) {
                return 2;
            }
            cm_host_rx(h, b, n);
            break;
        case 'X':
            if (!get(b, 4)) {
                return 2;
            }
            cm_host_set_tx_room(h, u32(b));
            break;
        case 'F':
            if (!get(b, 1)) {
                return 2;
            }
            cm_host_set_eeprom_fail(h, b[0]);
            break;
        case 'L':
            if (!get(b, 2) || !get(b + 2, b[1])) {
                return 2;
            }
            (void)cm_host_local(h, b[0], b + 2, b[1]);
            break;
        default:
            fprintf(stderr, "cm_replay: bad record %d\n", c);
            return 2;
        }
        flush_out(h);
    }
    free(h);
    return 0;
}
