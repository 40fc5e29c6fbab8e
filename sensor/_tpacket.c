/* The TPACKET_V3 capture engine's compiled part (sensor/tpacket.py sets the socket up; this reads it).
 *
 * read: waits for blocks the kernel has retired into the memory-mapped receive ring, turns their frames into
 * classic pcap records (16-byte record header, nanosecond timestamps, then the captured bytes) in a buffer the
 * caller supplies, and hands each block back to the kernel. The records then take camwatch's one decode path,
 * the same as dumpcap's pipe. A whole block at a time: one poll() per block at most, none per packet.
 *
 * drop_capabilities: every thread of the process gives up every capability, as tcpdump does after opening its
 * capture. Capabilities belong to threads, not to the process, and numpy's BLAS pool (among others) runs threads
 * before any capture is opened: each is asked by a signal to drop its own.
 *
 * attach_filter: a classic BPF program (packed struct sock_filter) onto the socket.
 *
 * Linux only; the build leaves the module out elsewhere (optional = true) and camwatch then offers dumpcap only.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif
#ifndef PR_SET_NO_NEW_PRIVS
#define PR_SET_NO_NEW_PRIVS 38
#endif

#define RECORD_HEADER 16
#define VLAN_TAG 4

/* The cursor the caller keeps between calls (a writable buffer of four uint64): the block being read, the offset
 * of its next frame (0: the block not yet started), the frames left in it, and blocks found malformed. A call
 * that fills the caller's buffer in the middle of a block leaves that block with the process; the next call goes on
 * from the cursor. */
enum { CUR_BLOCK, CUR_OFFSET, CUR_LEFT, CUR_DAMAGED, CUR_FIELDS };

static double elapsed(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Writes one frame as a pcap record at out; returns the bytes written, 0 if it does not fit in room, -1 if the
 * frame's header points outside the block. A VLAN tag the kernel took off into the frame header goes back between
 * the MAC addresses, as libpcap does: the decoder reads tags from the bytes, and dumpcap's stream has them there. */
static Py_ssize_t write_record(const uint8_t *block, uint64_t block_size, uint64_t off, uint8_t *out,
                               Py_ssize_t room, uint64_t *next)
{
    if (off < sizeof(struct tpacket_block_desc) || off + sizeof(struct tpacket3_hdr) > block_size)
        return -1;
    /* Copied, not cast: the kernel aligns frames (TPACKET_ALIGNMENT), but the offset comes from the block's own
       bytes, and a frame header read through a misaligned pointer is undefined (UBSan, on a garbled block). */
    struct tpacket3_hdr header;
    memcpy(&header, block + off, sizeof header);
    const struct tpacket3_hdr *h = &header;
    uint64_t mac = off + h->tp_mac, snap = h->tp_snaplen;
    if (mac > block_size || snap > block_size - mac)
        return -1;
    int tagged = ((h->tp_status & TP_STATUS_VLAN_VALID) || h->hv1.tp_vlan_tci != 0) && snap >= 12;
    uint32_t caplen = (uint32_t)snap + (tagged ? VLAN_TAG : 0);
    uint32_t wirelen = h->tp_len + (tagged ? VLAN_TAG : 0);
    if ((Py_ssize_t)(RECORD_HEADER + caplen) > room)
        return 0;
    uint32_t rec[4] = {h->tp_sec, h->tp_nsec, caplen, wirelen};
    memcpy(out, rec, sizeof rec);
    uint8_t *p = out + RECORD_HEADER;
    const uint8_t *frame = block + mac;
    if (tagged) {
        uint16_t tpid = (h->tp_status & TP_STATUS_VLAN_TPID_VALID) && h->hv1.tp_vlan_tpid ? h->hv1.tp_vlan_tpid
                                                                                           : 0x8100;
        uint16_t tci = h->hv1.tp_vlan_tci;
        memcpy(p, frame, 12);
        p[12] = (uint8_t)(tpid >> 8);
        p[13] = (uint8_t)tpid;
        p[14] = (uint8_t)(tci >> 8);
        p[15] = (uint8_t)tci;
        memcpy(p + 16, frame + 12, (size_t)snap - 12);
    } else {
        memcpy(p, frame, (size_t)snap);
    }
    *next = h->tp_next_offset;
    return RECORD_HEADER + (Py_ssize_t)caplen;
}

/* Copies what is left of the current (retired) block into out; returns 1 when the block is done and handed back,
 * 0 when out is full first. */
static int drain_block(uint8_t *ring, uint64_t block_size, uint64_t block_nr, uint64_t *cur, uint8_t *out,
                       Py_ssize_t len, Py_ssize_t *written, Py_ssize_t *packets)
{
    uint8_t *block = ring + cur[CUR_BLOCK] * block_size;
    struct tpacket_block_desc *desc = (struct tpacket_block_desc *)block;
    while (cur[CUR_LEFT] > 0) {
        uint64_t next = 0;
        Py_ssize_t n = write_record(block, block_size, cur[CUR_OFFSET], out + *written, len - *written, &next);
        if (n == 0)
            return 0;
        if (n < 0) {
            cur[CUR_DAMAGED]++;   /* the kernel wrote it, so never expected: the rest of the block is skipped */
            break;
        }
        *written += n;
        *packets += 1;
        cur[CUR_LEFT]--;
        if (cur[CUR_LEFT] > 0 && next == 0) {
            cur[CUR_DAMAGED]++;
            break;
        }
        cur[CUR_OFFSET] += next;
    }
    __atomic_store_n(&desc->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    cur[CUR_BLOCK] = (cur[CUR_BLOCK] + 1) % block_nr;
    cur[CUR_OFFSET] = 0;
    cur[CUR_LEFT] = 0;
    return 1;
}

/* Starts the cursor's block if the kernel has retired it; 0 if it still belongs to the kernel. */
static int take_block(uint8_t *ring, uint64_t block_size, uint64_t *cur)
{
    if (cur[CUR_OFFSET] != 0)
        return 1;
    struct tpacket_block_desc *desc = (struct tpacket_block_desc *)(ring + cur[CUR_BLOCK] * block_size);
    if (!(__atomic_load_n(&desc->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
        return 0;
    cur[CUR_LEFT] = desc->hdr.bh1.num_pkts;
    cur[CUR_OFFSET] = desc->hdr.bh1.offset_to_first_pkt;
    if (cur[CUR_OFFSET] == 0) {   /* an empty block says 0; a frame can never start there */
        cur[CUR_OFFSET] = sizeof(struct tpacket_block_desc);
        if (cur[CUR_LEFT] > 0)
            cur[CUR_DAMAGED]++, cur[CUR_LEFT] = 0;
    }
    return 1;
}

/* poll() for the next retired block; returns >0 ready, 0 timeout, -errno on a socket error (interface gone). */
static int wait_block(int fd, double timeout)
{
    struct pollfd pfd = {fd, POLLIN | POLLERR, 0};
    int r;
    do {
        r = poll(&pfd, 1, timeout > 0 ? (int)(timeout * 1000) : 0);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    if (r > 0 && (pfd.revents & (POLLERR | POLLHUP | POLLNVAL))) {
        int err = 0;
        socklen_t l = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) == 0 && err)
            return -err;
        if (pfd.revents & (POLLHUP | POLLNVAL))
            return -ENETDOWN;
    }
    return r;
}

static PyObject *ring_read(PyObject *self, PyObject *args)
{
    int fd;
    Py_buffer ring, cursor, out;
    Py_ssize_t block_size;
    double timeout, gather;
    if (!PyArg_ParseTuple(args, "iw*nw*w*dd", &fd, &ring, &block_size, &cursor, &out, &timeout, &gather))
        return NULL;
    PyObject *result = NULL;
    uint64_t *cur = (uint64_t *)cursor.buf;
    if (block_size < (Py_ssize_t)sizeof(struct tpacket_block_desc) || ring.len < block_size ||
        ring.len % block_size != 0 || cursor.len != CUR_FIELDS * (Py_ssize_t)sizeof(uint64_t) ||
        ((uintptr_t)cursor.buf % sizeof(uint64_t)) != 0 || cur[CUR_BLOCK] >= (uint64_t)(ring.len / block_size)) {
        PyErr_SetString(PyExc_ValueError, "read: ring, block size or cursor inconsistent");
        goto done;
    }
    uint64_t block_nr = (uint64_t)(ring.len / block_size);
    Py_ssize_t written = 0, packets = 0;
    int err = 0, fits = 1;
    Py_BEGIN_ALLOW_THREADS
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (take_block(ring.buf, (uint64_t)block_size, cur)) {
            if (!drain_block(ring.buf, (uint64_t)block_size, block_nr, cur, out.buf, out.len, &written, &packets)) {
                fits = written > 0;
                break;   /* the buffer is full */
            }
            continue;
        }
        /* Nothing retired: wait for the kernel, up to the timeout while empty-handed, and while something is
         * in hand only until the gathering time is up (larger batches, bounded delay). */
        double left = (written ? gather : timeout) - elapsed(&t0);
        if (left <= 0)
            break;
        int r = wait_block(fd, left);
        if (r < 0) {
            err = -r;
            break;
        }
        if (r == 0)
            break;
    }
    Py_END_ALLOW_THREADS
    if (!fits) {
        PyErr_SetString(PyExc_ValueError, "read: a frame larger than the whole buffer");
    } else if (err && written == 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
    } else if (written == 0) {
        result = Py_NewRef(Py_None);
    } else {
        result = Py_BuildValue("nn", written, packets);
    }
done:
    PyBuffer_Release(&ring);
    PyBuffer_Release(&cursor);
    PyBuffer_Release(&out);
    return result;
}

/* ---- filter ------------------------------------------------------------------------------------------------ */
static PyObject *attach_filter(PyObject *self, PyObject *args)
{
    int fd;
    Py_buffer prog;
    if (!PyArg_ParseTuple(args, "iy*", &fd, &prog))
        return NULL;
    if (prog.len == 0 || prog.len % sizeof(struct sock_filter) != 0 ||
        prog.len / (Py_ssize_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
        PyBuffer_Release(&prog);
        PyErr_SetString(PyExc_ValueError, "attach_filter: not a classic BPF program");
        return NULL;
    }
    struct sock_fprog fprog = {(unsigned short)(prog.len / sizeof(struct sock_filter)), (struct sock_filter *)prog.buf};
    int r = setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog);
    PyBuffer_Release(&prog);
    if (r != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

/* ---- capabilities ------------------------------------------------------------------------------------------ */
static int drop_here(void)
{
    int bad = 0;
    /* The bounding set first, while CAP_SETPCAP (if held at all) is still effective; without it the bounding set
     * stays as it was, which grants nothing once the permitted set is empty and no_new_privs is on. */
    for (int cap = 0; cap < 64; cap++)
        prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
        bad = 1;   /* EINVAL: a kernel before 4.3, which has no ambient set */
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    memset(data, 0, sizeof data);
    if (syscall(SYS_capset, &hdr, data) != 0)
        bad = 1;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        bad = 1;
    return bad;
}

static int acks, failures;

static void on_drop_signal(int sig)
{
    int saved = errno;
    if (drop_here())
        __atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&acks, 1, __ATOMIC_SEQ_CST);
    errno = saved;
}

/* A real-time signal nobody handles: the broadcast borrows it. */
static int free_signal(struct sigaction *old)
{
    for (int sig = SIGRTMAX - 1; sig > SIGRTMIN + 2; sig--) {
        if (sigaction(sig, NULL, old) == 0 && old->sa_handler == SIG_DFL && !(old->sa_flags & SA_SIGINFO))
            return sig;
    }
    return -1;
}

static PyObject *drop_capabilities(PyObject *self, PyObject *args)
{
    double wait = 2.0;   /* seconds for every other thread to answer */
    if (!PyArg_ParseTuple(args, "|d", &wait))
        return NULL;
    struct sigaction old, act;
    int sig = free_signal(&old);
    if (sig < 0) {
        PyErr_SetString(PyExc_OSError, "drop_capabilities: no free real-time signal");
        return NULL;
    }
    memset(&act, 0, sizeof act);
    act.sa_handler = on_drop_signal;
    act.sa_flags = SA_RESTART;   /* the other threads' system calls go on as if nothing happened */
    sigemptyset(&act.sa_mask);
    if (sigaction(sig, &act, NULL) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    __atomic_store_n(&acks, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&failures, 0, __ATOMIC_SEQ_CST);
    pid_t pid = getpid(), me = (pid_t)syscall(SYS_gettid);
    int sent = 0;
    DIR *dir = opendir("/proc/self/task");
    if (dir != NULL) {
        struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            pid_t tid = (pid_t)atoi(e->d_name);
            if (tid > 0 && tid != me && syscall(SYS_tgkill, pid, tid, sig) == 0)
                sent++;   /* a thread that ended meanwhile (ESRCH) has nothing left to drop */
        }
        closedir(dir);
    }
    struct timespec nap = {0, 1000000};
    for (int i = 0; i < wait * 1000 && __atomic_load_n(&acks, __ATOMIC_SEQ_CST) < sent; i++)
        nanosleep(&nap, NULL);
    int failed = drop_here() + __atomic_load_n(&failures, __ATOMIC_SEQ_CST);
    int acked = __atomic_load_n(&acks, __ATOMIC_SEQ_CST);
    /* A signal still on its way must find the handler, not the default action (which ends the process). */
    if (acked == sent)
        sigaction(sig, &old, NULL);
    if (dir == NULL)
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, "/proc/self/task");
    return Py_BuildValue("iii", sent, acked, failed);
}

static PyMethodDef methods[] = {
    {"read", ring_read, METH_VARARGS, "pcap records from the retired blocks of a TPACKET_V3 ring"},
    {"attach_filter", attach_filter, METH_VARARGS, "attach a classic BPF program to a socket"},
    {"drop_capabilities", drop_capabilities, METH_VARARGS, "every thread gives up every capability"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tpacket", NULL, -1, methods};

PyMODINIT_FUNC PyInit__tpacket(void) { return PyModule_Create(&module); }
