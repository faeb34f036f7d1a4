/*
 * cupmon wire protocol v1 constants for the C core.
 * Mirrors firmware_bridge/protocol.py and docs/protocol.md; the host tests
 * (tests/test_firmware*.py) check that both sides agree byte for byte.
 */
#ifndef CM_PROTO_H
#define CM_PROTO_H

#define CM_SYNC0 0xA5u
#define CM_SYNC1 0x5Au
#define CM_VERSION 1u
#define CM_HEADER_SIZE 11u
#define CM_CRC_SIZE 2u

/* message types */
#define CM_MSG_SAMPLE 0x01u
#define CM_MSG_INFO 0x02u
#define CM_MSG_EVENT 0x03u
#define CM_MSG_ACK 0x04u
#define CM_MSG_NACK 0x05u
#define CM_MSG_PING 0x10u
#define CM_MSG_GET_INFO 0x11u
#define CM_MSG_START 0x12u
#define CM_MSG_STOP 0x13u
#define CM_MSG_SET_BAND 0x14u
#define CM_MSG_VENT 0x15u
#define CM_MSG_ZERO 0x16u
#define CM_MSG_SET_RATE 0x17u
#define CM_MSG_WRITE_CAL 0x18u
#define CM_MSG_READ_CAL 0x19u
#define CM_MSG_SET_LIMIT 0x1Au

/* per-cup status bits in SAMPLE frames */
#define CM_ST_PUMP_ON 0x01u
#define CM_ST_VALVE_OPEN 0x02u
#define CM_ST_SENSOR_FAULT 0x04u
#define CM_ST_REGULATING 0x08u
#define CM_ST_INTERLOCK 0x10u
#define CM_ST_CALIBRATED 0x20u

/* EVENT codes */
#define CM_EV_INTERLOCK_TRIPPED 1u
#define CM_EV_INTERLOCK_CLEARED 2u
#define CM_EV_SENSOR_FAULT 3u
#define CM_EV_SENSOR_OK 4u
#define CM_EV_BOOT 5u
#define CM_EV_OVERRUN 6u
#define CM_EV_HOST_LOST 7u

/* NACK reasons */
#define CM_NACK_UNKNOWN_COMMAND 1u
#define CM_NACK_BAD_LENGTH 2u
#define CM_NACK_BAD_CUP 3u
#define CM_NACK_OUT_OF_RANGE 4u
#define CM_NACK_BUSY 5u
#define CM_NACK_UNSUPPORTED 6u
#define CM_NACK_INTERLOCK 7u
#define CM_NACK_STORAGE 8u
#define CM_NACK_SENSOR_FAULT 9u

/* sensor models (INFO) */
#define CM_SENSOR_UNKNOWN 0u
#define CM_SENSOR_MPXV6115V 1u
#define CM_SENSOR_SIMULATED 255u

/* INFO flags */
#define CM_INFO_CAL_ON_DEVICE 0x01u
#define CM_INFO_ABSOLUTE 0x02u
#define CM_INFO_SIMULATED 0x04u

#define CM_NO_READING (-32767 - 1)
#define CM_MIN_RATE_HZ 10u
#define CM_MAX_RATE_HZ 2000u
#define CM_ALL_CUPS 0xFFFFu

#endif
