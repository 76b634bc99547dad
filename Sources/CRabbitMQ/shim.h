#ifndef SHOPFLEET_CRABBITMQ_SHIM_H
#define SHOPFLEET_CRABBITMQ_SHIM_H
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <string.h>

/* Method numbers are macros with casts, which do not import into Swift. */
static const amqp_method_number_t SHOPFLEET_CONNECTION_CLOSE = AMQP_CONNECTION_CLOSE_METHOD;
static const amqp_method_number_t SHOPFLEET_CONNECTION_CLOSE_OK = AMQP_CONNECTION_CLOSE_OK_METHOD;
static const amqp_method_number_t SHOPFLEET_CONNECTION_BLOCKED = AMQP_CONNECTION_BLOCKED_METHOD;
static const amqp_method_number_t SHOPFLEET_CONNECTION_UNBLOCKED = AMQP_CONNECTION_UNBLOCKED_METHOD;
static const amqp_method_number_t SHOPFLEET_CHANNEL_CLOSE = AMQP_CHANNEL_CLOSE_METHOD;
static const amqp_method_number_t SHOPFLEET_CHANNEL_CLOSE_OK = AMQP_CHANNEL_CLOSE_OK_METHOD;
static const amqp_method_number_t SHOPFLEET_BASIC_DELIVER = AMQP_BASIC_DELIVER_METHOD;
static const amqp_method_number_t SHOPFLEET_BASIC_ACK = AMQP_BASIC_ACK_METHOD;
static const amqp_method_number_t SHOPFLEET_BASIC_NACK = AMQP_BASIC_NACK_METHOD;
static const amqp_method_number_t SHOPFLEET_BASIC_RETURN = AMQP_BASIC_RETURN_METHOD;
static const amqp_method_number_t SHOPFLEET_BASIC_CANCEL = AMQP_BASIC_CANCEL_METHOD;
static const amqp_method_number_t SHOPFLEET_BASIC_GET_OK = AMQP_BASIC_GET_OK_METHOD;
static const amqp_method_number_t SHOPFLEET_BASIC_GET_EMPTY = AMQP_BASIC_GET_EMPTY_METHOD;

/* amqp_login_with_properties is variadic (the SASL arguments): a fixed PLAIN form. */
static inline amqp_rpc_reply_t shopfleet_amqp_login_plain(
    amqp_connection_state_t state, const char *vhost, int channel_max, int frame_max,
    int heartbeat, const amqp_table_t *properties, const char *user, const char *password) {
    return amqp_login_with_properties(state, vhost, channel_max, frame_max, heartbeat, properties,
                                      AMQP_SASL_METHOD_PLAIN, user, password);
}

static inline amqp_bytes_t shopfleet_amqp_bytes(const void *bytes, size_t len) {
    amqp_bytes_t b; b.len = len; b.bytes = (void *)bytes; return b;
}
static inline amqp_table_t shopfleet_amqp_empty_table(void) { return amqp_empty_table; }
static inline amqp_bytes_t shopfleet_amqp_empty_bytes(void) { return amqp_empty_bytes; }
#endif
