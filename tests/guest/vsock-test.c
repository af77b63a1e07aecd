/*
 * tests/guest/vsock-test.c: a tiny AF_VSOCK tool for test guests (busybox has none). Built
 * static by the lab tests: gcc -static -O2 -o vsock-test tests/guest/vsock-test.c
 *
 *   vsock-test echo-server PORT   listen on PORT; print "LISTENING PORT"; echo every connection
 *                                 (one process each) until its EOF, then close it
 *   vsock-test accept-one PORT    listen on PORT, accept one connection, close it, exit 0
 *   vsock-test connect CID PORT   connect; copy stdin to the socket (half-close on EOF) and the
 *                                 socket to stdout until the peer's EOF; exit 1 if refused
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

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "echo-server") == 0) return echo_server(atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "accept-one") == 0) return accept_one(atoi(argv[2]));
    if (argc == 4 && strcmp(argv[1], "connect") == 0)
        return connect_to(atoi(argv[2]), atoi(argv[3]));
    fprintf(stderr, "usage: vsock-test echo-server PORT | accept-one PORT | connect CID PORT\n");
    return 2;
}
