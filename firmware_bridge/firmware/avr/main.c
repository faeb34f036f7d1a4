/*
 * cupmon reference firmware for the ATmega328P (Arduino Uno, 16 MHz) on bare
 * avr-libc: no Arduino core, registers only. The same portable core as the
 * Arduino sketch (../cupmon/cm_core.c); this file is only the HAL.
 *
 * Pins (Arduino names), see docs/firmware.md:
 *   cup   sensor  pump (high = run)  valve (high = energised = closed)
 *   1     A0      D3  PD3            D4  PD4
 *   2     A1      D5  PD5            D7  PD7
 *   3     A2      D6  PD6            D8  PB0
 *   4     A3      D9  PB1            D10 PB2
 *   status LED D13 PB5 (on: a cup is latched by the interlock or faulted)
 *   UART D0/D1 115200 8N1
 *
 * Valves are normally open (vent when unpowered): a reset, a brown-out or a
 * power cut releases every cup. The watchdog (250 ms) resets a hung loop.
 */
#include <avr/eeprom.h>
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/wdt.h>
#include <util/atomic.h>

#include "../cupmon/cm_core.h"

#ifndef F_CPU
#define F_CPU 16000000UL
#endif
#ifndef CM_BAUD
#define CM_BAUD 115200UL
#endif
#ifndef CM_CUPS
#define CM_CUPS CM_MAX_CUPS
#endif
#ifndef CM_SERIAL
#define CM_SERIAL "CUPMON-UNO"
#endif

#if CM_CUPS > 4 || CM_CUPS > CM_MAX_CUPS
#error "this pin table has 4 cups"
#endif

/* ---- pins ---------------------------------------------------------------- */

typedef struct {
    volatile uint8_t *port;
    uint8_t bit;
} pin_t;

static const pin_t pump_pin[4] = {{&PORTD, 3}, {&PORTD, 5}, {&PORTD, 6}, {&PORTB, 1}};
static const pin_t valve_pin[4] = {{&PORTD, 4}, {&PORTD, 7}, {&PORTB, 0}, {&PORTB, 2}};

static void pin_write(const pin_t *p, uint8_t high)
{
    if (high) {
        *p->port |= (uint8_t)(1u << p->bit);
    } else {
        *p->port &= (uint8_t)~(1u << p->bit);
    }
}

/* ---- clock: Timer1 at F_CPU/8 = 2 MHz, 32.768 ms per overflow ---------------- */

static volatile uint32_t t1_overflows;

ISR(TIMER1_OVF_vect)
{
    t1_overflows++;
}

uint32_t cm_hal_micros(void *hal)
{
    uint32_t ovf;
    uint16_t cnt;
    (void)hal;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE)
    {
        ovf = t1_overflows;
        cnt = TCNT1;
        if ((TIFR1 & _BV(TOV1)) && cnt < 0x8000u) {
            ovf++; /* overflowed between the two reads, ISR still pending */
        }
    }
    return ovf * 32768uL + (cnt >> 1);
}

/* ---- UART: interrupt driven rings ------------------------------------------------ */

#define TX_SIZE 128u /* powers of two */
#define RX_SIZE 64u

static volatile uint8_t tx_buf[TX_SIZE];
static volatile uint8_t tx_head, tx_tail;
static volatile uint8_t rx_buf[RX_SIZE];
static volatile uint8_t rx_head, rx_tail;

ISR(USART_RX_vect)
{
    uint8_t b = UDR0;
    uint8_t next = (uint8_t)((rx_head + 1u) & (RX_SIZE - 1u));
    if (next != rx_tail) { /* else: dropped; the host retries the command */
        rx_buf[rx_head] = b;
        rx_head = next;
    }
}

ISR(USART_UDRE_vect)
{
    if (tx_head == tx_tail) {
        UCSR0B &= (uint8_t)~_BV(UDRIE0);
        return;
    }
    UDR0 = tx_buf[tx_tail];
    tx_tail = (uint8_t)((tx_tail + 1u) & (TX_SIZE - 1u));
}

uint16_t cm_hal_uart_room(void *hal)
{
    (void)hal;
    return (uint16_t)((TX_SIZE - 1u) - ((uint8_t)(tx_head - tx_tail) & (TX_SIZE - 1u)));
}

void cm_hal_uart_write(void *hal, const uint8_t *buf, uint8_t len)
{
    (void)hal;
    while (len--) {
        uint8_t next = (uint8_t)((tx_head + 1u) & (TX_SIZE - 1u));
        while (next == tx_tail) {
            wdt_reset(); /* the ring drains by interrupt at 11.5 kB/s */
        }
        tx_buf[tx_head] = *buf++;
        tx_head = next;
        UCSR0B |= _BV(UDRIE0);
    }
}

static void uart_init(void)
{
    uint16_t ubrr = (uint16_t)((F_CPU + 4u * CM_BAUD) / (8u * CM_BAUD) - 1u);
    UCSR0A = _BV(U2X0);
    UBRR0H = (uint8_t)(ubrr >> 8);
    UBRR0L = (uint8_t)ubrr;
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00); /* 8N1 */
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);
}

/* ---- ADC: AVcc reference, the sensors' own 5 V supply: ratiometric ------------ */

uint16_t cm_hal_adc_read(void *hal, uint8_t cup)
{
    (void)hal;
    ADMUX = (uint8_t)(_BV(REFS0) | (cup & 0x07u));
    ADCSRA |= _BV(ADSC);
    while (ADCSRA & _BV(ADSC)) {
    }
    return ADC; /* 10 bits */
}

static void adc_init(void)
{
    ADMUX = _BV(REFS0);
    ADCSRA = _BV(ADEN) | _BV(ADPS2) | _BV(ADPS1) | _BV(ADPS0); /* /128: 125 kHz */
    DIDR0 = (uint8_t)((1u << CM_CUPS) - 1u);                    /* no digital input buffers */
}

/* ---- outputs -------------------------------------------------------------------- */

void cm_hal_set_pump(void *hal, uint8_t cup, uint8_t on)
{
    (void)hal;
    pin_write(&pump_pin[cup], on);
}

void cm_hal_set_valve(void *hal, uint8_t cup, uint8_t open)
{
    (void)hal;
    pin_write(&valve_pin[cup], (uint8_t)!open); /* energise to close */
}

/* ---- EEPROM ----------------------------------------------------------------------- */

uint8_t cm_hal_eeprom_read(void *hal, uint16_t addr)
{
    (void)hal;
    return eeprom_read_byte((const uint8_t *)(uintptr_t)addr);
}

uint8_t cm_hal_eeprom_write(void *hal, uint16_t addr, uint8_t value)
{
    (void)hal;
    if (addr > E2END) {
        return 1u;
    }
    wdt_reset();
    eeprom_update_byte((uint8_t *)(uintptr_t)addr, value); /* 3.3 ms if it changes */
    return 0u;
}

/* ---- main -------------------------------------------------------------------------- */

static cm_dev_t dev;

int main(void)
{
    /* serial, cups, ADC bits, sensor, flags, reset cause, then rate, band and
     * limit at power-on: 0 = the core's defaults (100 Hz, 20-25 kPa, 30 kPa) */
    static const cm_config_t cfg = {CM_SERIAL, CM_CUPS, 10u, CM_SENSOR_MPXV6115V, 0u, 0u,
                                    0u,        0,       0,   0};
    cm_config_t c = cfg;
    uint8_t i;
    /* reset cause for the BOOT event: MCUSR bits (1 power-on, 2 external,
     * 4 brown-out, 8 watchdog); a watchdog reset leaves the watchdog on */
    uint8_t reset_cause = MCUSR;
    MCUSR = 0;
    wdt_disable();

    /* outputs low first: pumps off, valves de-energised (open: cups vent) */
    PORTD &= (uint8_t)~(_BV(3) | _BV(4) | _BV(5) | _BV(6) | _BV(7));
    PORTB &= (uint8_t)~(_BV(0) | _BV(1) | _BV(2) | _BV(5));
    DDRD |= _BV(3) | _BV(4) | _BV(5) | _BV(6) | _BV(7);
    DDRB |= _BV(0) | _BV(1) | _BV(2) | _BV(5);

    TCCR1A = 0;
    TCCR1B = _BV(CS11); /* F_CPU / 8 */
    TIMSK1 = _BV(TOIE1);
    uart_init();
    adc_init();
    wdt_enable(WDTO_250MS);
    sei();

    c.reset_cause = reset_cause;
    cm_init(&dev, &c, 0);
    for (;;) {
        uint8_t alarm = 0u;
        wdt_reset();
        while (rx_tail != rx_head) {
            uint8_t b = rx_buf[rx_tail];
            rx_tail = (uint8_t)((rx_tail + 1u) & (RX_SIZE - 1u));
            cm_rx_byte(&dev, b);
        }
        cm_poll(&dev);
        for (i = 0; i < dev.n_cups; i++) {
            alarm |= (uint8_t)(dev.cup[i].flags & (CM_CUP_INTERLOCK | CM_CUP_FAULT));
        }
        if (alarm) {
            PORTB |= _BV(5);
        } else {
            PORTB &= (uint8_t)~_BV(5);
        }
    }
}
