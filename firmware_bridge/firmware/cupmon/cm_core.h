/*
 * cupmon reference firmware: portable core.
 *
 * C99, no I/O of its own, no dynamic memory, fixed point in the sample path
 * (float only where calibration coefficients are applied). The platform
 * (Arduino sketch, bare avr-libc main, host test shim) owns the hardware and
 * provides the cm_hal_* functions declared below; it calls cm_init() once,
 * cm_rx_byte() for every byte received from the host and cm_poll() as often
 * as it can (at least once per sample period).
 *
 * Every instance keeps all of its state in a cm_dev_t that the caller
 * allocates, so the host build can run several devices in one process.
 * Documentation: docs/firmware.md. Wire format: docs/protocol.md.
 */
#ifndef CM_CORE_H
#define CM_CORE_H

#include <stdint.h>

#include "cm_proto.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- build-time configuration ------------------------------------------ */

#ifndef CM_MAX_CUPS
#define CM_MAX_CUPS 4 /* Uno: A0..A3; the host build uses 16 */
#endif
#if CM_MAX_CUPS < 1 || CM_MAX_CUPS > 16
#error "CM_MAX_CUPS must be 1..16"
#endif

#define CM_FW_MAJOR 1
#define CM_FW_MINOR 0
#define CM_FW_PATCH 0

#define CM_DEFAULT_RATE_HZ 100u
#define CM_DEFAULT_LOW 2000    /* band, 0.01 kPa suction (20.00 kPa) */
#define CM_DEFAULT_HIGH 2500   /* 25.00 kPa */
#define CM_DEFAULT_LIMIT 3000  /* interlock hard limit, 30.00 kPa */
#define CM_LIMIT_MIN 100       /* SET_LIMIT accepts 1.00 .. 100.00 kPa */
#define CM_LIMIT_MAX 10000
#define CM_TARE_MAX 500        /* ZERO accepted only within +-5.00 kPa */

/* host loss: EVENT HOST_LOST after this long without a valid host frame */
#define CM_HOST_LOST_US 5000000uL
/* Sensor checks (the same defaults as the simulator's model of them,
 * sim/sensor.py SensorParams):
 * - out of range: untared, uncalibrated suction outside -3.00 .. 100.00 kPa
 *   (the MPXV6115V's rails, a cut wire with its pull-down, a short to 5 V
 *   all land outside);
 * - stuck: bit-identical counts for 1 s of samples (at least 20) while the
 *   pump is driven (the simulator counts them with the pump off too);
 * - a fault clears after 0.5 s of samples (at least 1) without a fault sign. */
#define CM_RANGE_LOW (-300)
#define CM_RANGE_HIGH 10000
#define CM_STUCK_MIN_SAMPLES 20u
#define CM_STUCK_S_NUM 1u   /* stuck after rate * NUM / DEN samples */
#define CM_STUCK_S_DEN 1u
#define CM_CLEAR_S_NUM 1u   /* clear after rate * NUM / DEN samples */
#define CM_CLEAR_S_DEN 2u
/* OVERRUN events at most once per second */
#define CM_OVERRUN_REPORT_US 1000000uL

/* largest command payload we accept (WRITE_CAL has 13 bytes) */
#define CM_RX_MAX_PAYLOAD 16u
#define CM_RX_FRAME_MAX (CM_HEADER_SIZE + CM_RX_MAX_PAYLOAD + CM_CRC_SIZE)
/* largest response payload we remember for re-acks (READ_CAL ACK: 17) */
#define CM_RESP_MAX 17u
#define CM_INFO_LEN 27u
#define CM_SAMPLE_LEN(n) (1u + 3u * (n))
/* largest frame we send: INFO (27) or SAMPLE (1 + 3n), whichever is longer */
#define CM_TX_PAYLOAD_MAX \
    (CM_SAMPLE_LEN(CM_MAX_CUPS) > CM_INFO_LEN ? CM_SAMPLE_LEN(CM_MAX_CUPS) : CM_INFO_LEN)
#define CM_TX_FRAME_MAX (CM_HEADER_SIZE + CM_TX_PAYLOAD_MAX + CM_CRC_SIZE)

/* EEPROM layout (docs/firmware.md): one record per cup */
#define CM_EE_BASE 0u
#define CM_EE_STRIDE 18u
#define CM_EE_LAYOUT 1u
#define CM_EE_FLAG_CAL 0x01u
#define CM_EE_FLAG_TARE 0x02u

/* ---- hardware abstraction (provided by the platform) -------------------- */

/* Free-running microsecond clock, wraps at 2^32. */
uint32_t cm_hal_micros(void *hal);
/* ADC counts of cup `cup` (0-based), ratiometric to the sensor supply:
 * counts / 2^adc_bits = Vout / Vs. */
uint16_t cm_hal_adc_read(void *hal, uint8_t cup);
/* Drive the pump of cup `cup` (0-based): 1 = run. */
void cm_hal_set_pump(void *hal, uint8_t cup, uint8_t on);
/* Drive the vent valve of cup `cup` (0-based): 1 = open (vent to ambient). */
void cm_hal_set_valve(void *hal, uint8_t cup, uint8_t open);
/* Queue bytes for the UART; may block until they fit. */
void cm_hal_uart_write(void *hal, const uint8_t *buf, uint8_t len);
/* Bytes the UART can take now without blocking (SAMPLE frames that do not
 * fit are dropped and counted as overrun instead of blocking). */
uint16_t cm_hal_uart_room(void *hal);
/* Non-volatile storage, one byte at an address; write returns 0 on success. */
uint8_t cm_hal_eeprom_read(void *hal, uint16_t addr);
uint8_t cm_hal_eeprom_write(void *hal, uint16_t addr, uint8_t value);

/* ---- state -------------------------------------------------------------- */

/* internal per-cup flags */
#define CM_CUP_REGULATING 0x01u
#define CM_CUP_PUMP 0x02u
#define CM_CUP_VALVE_OPEN 0x04u
#define CM_CUP_INTERLOCK 0x08u
#define CM_CUP_FAULT 0x10u
#define CM_CUP_CAL 0x80u

typedef struct {
    float c0, c1, c2;        /* calibration, kPa: c0 + c1*x + c2*x^2 */
    int16_t low, high;       /* target band, 0.01 kPa suction */
    int16_t tare;            /* subtracted after calibration, 0.01 kPa */
    int16_t reading;         /* last suction sent, 0.01 kPa, or CM_NO_READING */
    int16_t untared;         /* last calibrated reading before tare */
    uint16_t last_counts;
    uint16_t same_run;       /* repeats of last_counts (0: it just changed) */
    uint16_t clean_run;      /* samples without a fault sign while faulted */
    uint8_t flags;           /* CM_CUP_* */
    uint8_t ee_flags;        /* CM_EE_FLAG_* of the stored record */
} cm_cup_t;

typedef struct {
    char serial[16];      /* ASCII, NUL padded */
    uint8_t n_cups;       /* 1..CM_MAX_CUPS */
    uint8_t adc_bits;     /* 8..16 */
    uint8_t sensor_model; /* CM_SENSOR_* */
    uint8_t info_flags;   /* CM_INFO_*; CAL_ON_DEVICE is always added */
    uint8_t reset_cause;  /* value of the BOOT event */
    /* power-on settings of this board; 0 (or invalid) = the defaults above */
    uint16_t rate_hz;     /* 10..2000 */
    int16_t band_low;     /* 0.01 kPa; needs 0 <= low < high <= limit */
    int16_t band_high;
    int16_t limit;        /* CM_LIMIT_MIN..CM_LIMIT_MAX */
} cm_config_t;

typedef struct cm_dev {
    void *hal;
    cm_cup_t cup[CM_MAX_CUPS];
    char serial[16];
    uint32_t next_us;        /* time of the next sample */
    uint32_t period_us;      /* integer part of 1e6 / rate */
    uint32_t last_host_us;   /* last valid host frame */
    uint32_t overrun_us;     /* last OVERRUN event */
    uint16_t period_rem;     /* 1e6 % rate, spread by rem_acc */
    uint16_t rem_acc;
    uint16_t rate_hz;
    uint16_t stuck_n;        /* samples of identical counts that mean "stuck" */
    uint16_t clear_n;        /* clean samples that clear a sensor fault */
    uint16_t tx_seq;
    uint16_t overrun;        /* samples not sent since the last report */
    uint16_t last_seq;       /* last executed command: seq, type, payload CRC */
    uint16_t last_pcrc;
    int16_t limit;           /* interlock hard limit, 0.01 kPa */
    uint8_t last_type;
    uint8_t have_last;
    uint8_t last_resp_type;  /* ACK or NACK */
    uint8_t last_resp_len;
    uint8_t last_resp[CM_RESP_MAX];
    uint8_t host_state;      /* 0 never seen, 1 present, 2 lost (reported) */
    uint8_t n_cups, adc_bits, sensor_model, info_flags;
    uint8_t rx_n;
    uint8_t rx_buf[CM_RX_FRAME_MAX];
} cm_dev_t;

/* ---- API ---------------------------------------------------------------- */

/* Load calibration from storage, put every cup in the safe idle state (pump
 * off, valve open), send INFO and EVENT BOOT. */
void cm_init(cm_dev_t *d, const cm_config_t *cfg, void *hal);
/* Feed one byte received from the host. */
void cm_rx_byte(cm_dev_t *d, uint8_t b);
/* Run whatever is due: the sample/control tick, host-loss and overrun events. */
void cm_poll(cm_dev_t *d);
/* Device time at which the next sample is due. */
uint32_t cm_next_sample_us(const cm_dev_t *d);
/* Execute a command from a local control (a front-panel button, a scripted
 * practitioner in the simulator) as if the host had sent it, without a reply
 * and without touching host presence or the retry memory. Returns 0 when it
 * was executed, else the NACK reason. Events it raises are sent as usual. */
uint8_t cm_local_command(cm_dev_t *d, uint8_t type, const uint8_t *payload, uint8_t len);

/* ---- pure helpers (used by the core, exported for the host tests) ------- */

uint16_t cm_crc16(const uint8_t *data, uint16_t len, uint16_t crc);
/* MPXV6115V: counts (ratiometric, `bits` wide) to suction in 0.01 kPa. */
int16_t cm_counts_to_centi(uint16_t counts, uint8_t bits);
/* The shared regulator rule, exact in integers: pump on when
 * s < low + (high-low)/4, off when s >= high - (high-low)/4, else keep. */
uint8_t cm_regulate(uint8_t pump_on, int16_t s, int16_t low, int16_t high);
/* Build a frame into out (13 + len bytes); returns its size. */
uint16_t cm_encode_frame(uint8_t *out, uint8_t type, uint16_t seq, uint32_t time_us,
                         const uint8_t *payload, uint8_t len);

#ifdef __cplusplus
}
#endif

#endif
