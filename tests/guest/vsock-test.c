/*
 * tests/guest/vsock-test.c: a tiny AF_VSOCK tool for test guests (busybox has none). Built
 * static by the lab tests: gcc -static -O2 -o vsock-test tests/guest/vsock-test.c
 *
 *   vsock-test echo-server PORT   listen on PORT; print "LISTENING PORT"; echo every connection
 *                                 (one process each) until its EOF, then close it
 *   vsock-test accept-one PORT    listen on PORT, accept one connection, close it, exit 0
 *   vsock-test connect CID PORT   connect; copy stdin to the socket (half-close on EOF) and the
 *                                 socket to stdout until the peer's EOF; exit 1 if refused
 *   vsock-test sink PORT          listen on PORT; print "LISTENING PORT"; for each connection in
 *                                 turn read to EOF, answer "RECEIVED <bytes>\n" and close
 *   vsock-test source PORT BYTES  listen on PORT; print "LISTENING PORT"; for each connection in
 *                                 turn write BYTES zero bytes and close
 * sink and source serve bench/virtio-vsock's throughput runs.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static void die(const char *what) {
    fprintf(stderr, "vsock-test: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int write_all(int fd, const char *buf, ssize_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += n;
        len -= n;
    }
    return 0;
}

static int listen_on(unsigned port) {
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(fd, 64) < 0) die("listen");
    return fd;
}

static void echo(int fd) {
    static char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        if (write_all(fd, buf, n) < 0) break;
    }
    shutdown(fd, SHUT_WR);
    close(fd);
}

static int echo_server(unsigned port) {
    int fd = listen_on(port);
    signal(SIGCHLD, SIG_IGN);
    printf("LISTENING %u\n", port);
    fflush(stdout);
    for (;;) {
        int conn = accept(fd, NULL, NULL);
        if (conn < 0) {
            if (errno == EINTR) continue;
            die("accept");
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(fd);
            echo(conn);
            _exit(0);
        }
        close(conn);
    }
}

static int accept_one(unsigned port) {
    int fd = listen_on(port);
    int conn = accept(fd, NULL, NULL);
    if (conn < 0) die("accept");
    close(conn);
    return 0;
}

static int connect_to(unsigned cid, unsigned port) {
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    static char buf[65536];
    int stdin_open = 1;
    for (;;) {
        struct pollfd fds[2] = {{.fd = fd, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
        if (poll(fds, stdin_open ? 2 : 1, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        if (fds[0].revents) {
            ssize_t n = read(fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) die("read socket");
            if (n == 0) break;
            if (write_all(1, buf, n) < 0) die("write stdout");
        }
        if (stdin_open && fds[1].revents) {
            ssize_t n = read(0, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) die("read stdin");
            if (n == 0) {
                stdin_open = 0;
                shutdown(fd, SHUT_WR);
            } else if (write_all(fd, buf, n) < 0) {
                die("write socket");
            }
        }
    }
    close(fd);
    return 0;
}

static int accept_next(int fd) {
    for (;;) {
        int conn = accept(fd, NULL, NULL);
        if (conn >= 0) return conn;
        if (errno != EINTR) die("accept");
    }
}

static _Noreturn void sink(unsigned port) {
    int fd = listen_on(port);
    signal(SIGPIPE, SIG_IGN); /* a peer that goes away ends its connection, not the server */
    static char buf[262144];
    printf("LISTENING %u\n", port);
    fflush(stdout);
    for (;;) {
        int conn = accept_next(fd);
        long long total = 0;
        for (;;) {
            ssize_t n = read(conn, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            total += n;
        }
        char reply[64];
        int len = snprintf(reply, sizeof reply, "RECEIVED %lld\n", total);
        write_all(conn, reply, len);
        close(conn);
    }
}

static _Noreturn void source(unsigned port, long long bytes) {
    int fd = listen_on(port);
    signal(SIGPIPE, SIG_IGN); /* a peer that goes away ends its connection, not the server */
    static char buf[262144];
    printf("LISTENING %u\n", port);
    fflush(stdout);
    for (;;) {
        int conn = accept_next(fd);
        long long left = bytes;
        while (left > 0) {
            ssize_t chunk = left < (long long)sizeof buf ? (ssize_t)left : (ssize_t)sizeof buf;
            if (write_all(conn, buf, chunk) < 0) break;
            left -= chunk;
        }
        close(conn);
    }
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "echo-server") == 0) return echo_server(atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "accept-one") == 0) return accept_one(atoi(argv[2]));
    if (argc == 4 && strcmp(argv[1], "connect") == 0)
        return connect_to(atoi(argv[2]), atoi(argv[3]));
    if (argc == 3 && strcmp(argv[1], "sink") == 0) sink(atoi(argv[2]));
    if (argc == 4 && strcmp(argv[1], "source") == 0) source(atoi(argv[2]), atoll(argv[3]));
    fprintf(stderr, "usage: vsock-test echo-server PORT | accept-one PORT | connect CID PORT"
                    " | sink PORT | source PORT BYTES\n");
    return 2;
}
