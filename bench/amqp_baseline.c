/*
 * The AMQP baseline for `shopfleet bench clients`: the same work as the Swift client, written
 * directly against rabbitmq-c, single-threaded, with no abstraction in between.
 *
 *   amqp_baseline publish <queue> <count> <size> <window>   publish with confirms, <window> in flight
 *   amqp_baseline consume <queue> <count> <prefetch>        consume and ack each delivery
 *   amqp_baseline consume-coalesced <queue> <count> <prefetch>
 *                                                           consume; when no further delivery is
 *                                                           already read, ack everything so far
 *                                                           with one multiple ack (what the Swift
 *                                                           client does with a burst of acks)
 *
 * Connection settings come from the environment (never argv): AMQP_HOST, AMQP_PORT, AMQP_VHOST,
 * AMQP_USER, AMQP_PASSWORD. Prints one line: "<messages> <seconds>".
 */
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void die_on(int failed, const char *what) {
    if (failed) { fprintf(stderr, "amqp_baseline: %s failed\n", what); exit(2); }
}

static void die_on_reply(amqp_rpc_reply_t r, const char *what) {
    die_on(r.reply_type != AMQP_RESPONSE_NORMAL, what);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *env_or(const char *name, const char *fallback) {
    const char *v = getenv(name);
    return v ? v : fallback;
}

static amqp_connection_state_t open_connection(void) {
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *socket = amqp_tcp_socket_new(conn);
    die_on(socket == NULL, "socket");
    die_on(amqp_socket_open(socket, env_or("AMQP_HOST", "127.0.0.1"), atoi(env_or("AMQP_PORT", "5672"))) != AMQP_STATUS_OK, "connect");
    die_on_reply(amqp_login(conn, env_or("AMQP_VHOST", "/"), 0, 131072, 30, AMQP_SASL_METHOD_PLAIN,
                            env_or("AMQP_USER", "guest"), env_or("AMQP_PASSWORD", "guest")), "login");
    amqp_channel_open(conn, 1);
    die_on_reply(amqp_get_rpc_reply(conn), "channel.open");
    return conn;
}

static int publish(const char *queue, long count, long size, long window) {
    amqp_connection_state_t conn = open_connection();
    amqp_confirm_select(conn, 1);
    die_on_reply(amqp_get_rpc_reply(conn), "confirm.select");
    char *body = malloc(size);
    memset(body, 'x', size);
    amqp_basic_properties_t props;
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.delivery_mode = 2;
    props.content_type = amqp_cstring_bytes("application/octet-stream");
    amqp_bytes_t message = {(size_t)size, body};
    long sent = 0, confirmed = 0;
    double start = now_seconds();
    while (confirmed < count) {
        while (sent < count && sent - confirmed < window) {
            die_on(amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(queue), 0, 0, &props, message) != AMQP_STATUS_OK, "publish");
            sent++;
        }
        amqp_frame_t frame;
        die_on(amqp_simple_wait_frame(conn, &frame) != AMQP_STATUS_OK, "wait for confirm");
        if (frame.frame_type == AMQP_FRAME_METHOD && frame.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *ack = frame.payload.method.decoded;
            confirmed = (long)ack->delivery_tag;  /* tags are 1..n in order; multiple covers all below */
        } else if (frame.frame_type == AMQP_FRAME_METHOD && frame.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            die_on(1, "broker nacked a message");
        }
        amqp_maybe_release_buffers(conn);
    }
    double elapsed = now_seconds() - start;
    printf("%ld %.6f\n", count, elapsed);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    free(body);
    return 0;
}

static int consume(const char *queue, long count, long prefetch, int coalesce) {
    amqp_connection_state_t conn = open_connection();
    amqp_basic_qos(conn, 1, 0, (uint16_t)prefetch, 0);
    die_on_reply(amqp_get_rpc_reply(conn), "basic.qos");
    amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    die_on_reply(amqp_get_rpc_reply(conn), "basic.consume");
    long received = 0;
    double start = now_seconds();
    while (received < count) {
        amqp_envelope_t envelope;
        amqp_maybe_release_buffers(conn);
        amqp_rpc_reply_t r = amqp_consume_message(conn, &envelope, NULL, 0);
        die_on_reply(r, "consume");
        received++;
        if (!coalesce) {
            die_on(amqp_basic_ack(conn, 1, envelope.delivery_tag, 0) != AMQP_STATUS_OK, "ack");
        } else if (received == count || (!amqp_data_in_buffer(conn) && !amqp_frames_enqueued(conn))) {
            die_on(amqp_basic_ack(conn, 1, envelope.delivery_tag, 1) != AMQP_STATUS_OK, "ack multiple");
        }
        amqp_destroy_envelope(&envelope);
    }
    double elapsed = now_seconds() - start;
    printf("%ld %.6f\n", received, elapsed);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 6 && strcmp(argv[1], "publish") == 0) return publish(argv[2], atol(argv[3]), atol(argv[4]), atol(argv[5]));
    if (argc == 5 && strcmp(argv[1], "consume") == 0) return consume(argv[2], atol(argv[3]), atol(argv[4]), 0);
    if (argc == 5 && strcmp(argv[1], "consume-coalesced") == 0) return consume(argv[2], atol(argv[3]), atol(argv[4]), 1);
    fprintf(stderr, "usage: amqp_baseline publish <queue> <count> <size> <window> | consume[-coalesced] <queue> <count> <prefetch>\n");
    return 2;
}
