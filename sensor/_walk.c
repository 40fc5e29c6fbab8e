/*
 * The per-packet loops of replay, compiled: the classic-pcap record walk (inherently sequential: each record's
 * length says where the next one starts), the header decode and the grouping of a batch by flow. Each gives the
 * same results, bit for bit, as the Python/numpy code it shadows (CaptureReader._walk_pcap_python,
 * decode.decode_numpy, flows.group_numpy), which stays the fallback when this extension cannot be built.
 *
 * walk(buffer, big_endian, scale, max_record) ->
 *     (used, need, bad_offset, bad_length, offsets, caplens, wirelens, stamps)
 * offsets/caplens/wirelens are read-only memoryviews (columns, below) holding native int64, stamps native float64,
 * one entry per complete record.
 * need: bytes the incomplete record at `used` requires (0 when the buffer ended on a boundary).
 * bad_offset: position of a record whose length exceeds max_record (its length in bad_length), else -1.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_buffers.h"
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <math.h>
#include <errno.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22   /* Linux 5.14; older kernels: EINVAL, ignored */
#endif

#ifndef WALK_PREFETCH
#define WALK_PREFETCH 8   /* records ahead: ~10 KB of video, a few hundred ns of memory latency at a record's pace */
#endif

/* Each record's header says where the next one starts, so a walk over a file from the page cache waits out one
   cache miss per record, one after the other. Asking for the header (and the frame headers after it, which the
   decode reads next) WALK_PREFETCH records on, guessed from the size of the record at pos (video is runs of
   like-sized frames), lets those misses overlap: the walk of vlan100's 1 M packets took 0.105 s, 0.065 s with it.
   A hint only: a wrong guess costs a wasted fetch, never a different result. */
static inline void fetch_ahead(const unsigned char *data, Py_ssize_t pos, Py_ssize_t size, Py_ssize_t end)
{
    Py_ssize_t ahead = pos + WALK_PREFETCH * size;
    if (ahead + 128 <= end) {
        __builtin_prefetch(data + ahead);
        __builtin_prefetch(data + ahead + 64);
    }
}

/* A memory-mapped buffer's pages mapped into the process in one system call before the walk touches them
   (MADV_POPULATE_READ, Linux 5.14), when the caller asks, instead of a page fault every few pages: on one host
   vlan100's 1.2 GiB walked through the map took 0.162 s of CPU faulting, 0.146 s so (docs/benchmarks.md, issue 16,
   1 December afternoon); on another, populating was the dearer (2 December, midday), so sensor.mapped.PageMapping
   asks for whichever costs less where it runs. Done
   here, without the GIL the walk has released already, not by sensor.mapped: a separate call there would give up
   and take back the GIL once more per chunk, a wait while the other thread runs Python. A hint: errors (an older
   kernel, a page past a cut file's end) are ignored, and a page it could not map is faulted by the walk, where the
   map's guard (sensor/_mapguard.c) deals with it. */
static void populate_pages(const unsigned char *data, Py_ssize_t len)
{
#ifdef __linux__
    long page = sysconf(_SC_PAGESIZE);
    if (len <= 0 || page <= 0)
        return;
    uintptr_t from = (uintptr_t)data & ~(uintptr_t)(page - 1);
    (void)madvise((void *)from, (uintptr_t)data + (uintptr_t)len - from, MADV_POPULATE_READ);
#else
    (void)data; (void)len;
#endif
}

static inline uint32_t load32(const unsigned char *p, int big_endian)
{
    if (big_endian)
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | (uint32_t)p[0];
}

/* Whether a buffer's first byte sits at a multiple of `size`, as the C type it is read as requires (an empty one
   is never read: any address). */
static inline int aligned(const Py_buffer *view, uintptr_t size)
{
    return view->len == 0 || (uintptr_t)view->buf % size == 0;
}

/*
 * Columns: what walk, walk_pcapng and decode hand back, each a read-only buffer (a memoryview of a column object)
 * in a block of plain memory that goes back to a small pool when the last view of it is gone, for the next batch's
 * columns. As bytes objects, allocated and freed batch after batch by glibc, they were a fresh mapping or a
 * trimmed heap more often than not, faulted in page by page when first written (with the walk's copy of its
 * columns and the decode's clearing of them, most of the reading thread's page faults on the video capture:
 * docs/benchmarks.md, issue 16, 1 December night). The pool holds at most POOL_BLOCKS blocks of POOL_MIN to
 * POOL_MAX bytes (an eighth over: ~4.6 MB in all); a column given back past the count, or larger (a flood's
 * 16,384-packet slice has 130-260 KB ones), goes back to malloc: pooling those too cost the 1 M-packet flood
 * ~7,000 more page faults and up to 9 MiB more peak memory, glibc no longer reusing the heap it had grown for
 * them. Touched only with the GIL: columns are made before a loop lets it go and die where their last reference
 * is dropped, with it. Which block a column gets changes nothing but where it lives: every byte of it is written
 * before it is handed back.
 */
#define POOL_BLOCKS 64
#define POOL_MIN 4096                        /* smaller blocks malloc reuses without faults of its own */
#define POOL_MAX ((Py_ssize_t)64 << 10)      /* a batch of video's columns, 6,500 packets, but its addresses */

typedef struct {
    PyObject_HEAD
    char *data;
    Py_ssize_t len, room;   /* bytes of it handed back, of the block */
} column_t;

static struct { char *data; Py_ssize_t room; } pool[POOL_BLOCKS];
static int pooled;
static Py_ssize_t pooled_bytes;   /* for the tests */

/* A block of at least `size` bytes (its size in *room): the smallest pooled block that fits without wasting more
   than its size again, else a new one, of a size the pool takes with an eighth to spare (the next batch's slightly
   longer column fits it too). NULL when memory ran out. */
static char *block_take(Py_ssize_t size, Py_ssize_t *room)
{
    int best = -1;
    for (int i = 0; i < pooled; i++)
        if (pool[i].room >= size && pool[i].room <= 2 * size + POOL_MIN && (best < 0 || pool[i].room < pool[best].room))
            best = i;
    if (best >= 0) {
        char *data = pool[best].data;
        *room = pool[best].room;
        pooled_bytes -= *room;
        pool[best] = pool[--pooled];
        return data;
    }
    *room = size < POOL_MIN || size > POOL_MAX ? (size < 16 ? 16 : size) : size + size / 8;
    return malloc(*room);
}

static int poolable(Py_ssize_t room)
{
    return room >= POOL_MIN && room <= POOL_MAX + POOL_MAX / 8;
}

static void block_give(char *data, Py_ssize_t room)
{
    if (data && poolable(room) && pooled < POOL_BLOCKS) {
        pool[pooled].data = data;
        pool[pooled].room = room;
        pooled++;
        pooled_bytes += room;
        return;
    }
    free(data);
}

static void column_dealloc(column_t *c)
{
    block_give(c->data, c->room);
    PyObject_Free(c);
}

static int column_getbuffer(column_t *c, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)c, c->data, c->len, 1, flags);
}

static PyBufferProcs column_as_buffer = {(getbufferproc)column_getbuffer, NULL};

static PyTypeObject column_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sensor._walk.column",
    .tp_basicsize = sizeof(column_t),
    .tp_dealloc = (destructor)column_dealloc,
    .tp_as_buffer = &column_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A walk's or a decode's column, read through a memoryview.",
};

/* A column with room for `size` bytes, its contents unset; NULL with the error set. */
static column_t *column_new(Py_ssize_t size)
{
    column_t *c = PyObject_New(column_t, &column_type);
    if (!c)
        return NULL;
    c->len = size;
    if (!(c->data = block_take(size, &c->room))) {
        c->room = 0;
        Py_DECREF(c);
        return (column_t *)PyErr_NoMemory();
    }
    return c;
}

/* A read-only memoryview of the column; the column's reference is the view's (NULL with the error set). */
static PyObject *column_view(column_t *c)
{
    PyObject *view = PyMemoryView_FromObject((PyObject *)c);
    Py_DECREF(c);
    return view;
}

/* pooled([empty]) -> (blocks, bytes) in the pool now, its blocks freed first if `empty`: for the tests. */
static PyObject *pooled_now(PyObject *self, PyObject *args)
{
    int empty = 0;
    if (!PyArg_ParseTuple(args, "|p", &empty))
        return NULL;
    while (empty && pooled > 0) {
        pooled--;
        pooled_bytes -= pool[pooled].room;
        free(pool[pooled].data);
    }
    return Py_BuildValue("(in)", pooled, pooled_bytes);
}

/*
 * The columns a walk hands back, one entry per record: frame offset, captured and wire length, timestamp and (pcapng
 * only: with_links) link type, written where they are handed back (no buffer of the walk's own copied at the end).
 * Room for the worst case (16-byte records) would be a quarter of the slice per column, so they are sized, with
 * the GIL, for the records the walk expects (the previous walk's records per byte of its kind, an eighth over) and
 * grown, without it (a column is the walk's alone until it returns), when a slice holds more: a guess wrong either
 * way costs a realloc or room unused, never a different result. records_room runs without the GIL; the rest with it.
 */
typedef struct {
    column_t *col[5];                                /* col[4] only with_links */
    int64_t *off, *cap, *wire;                       /* their blocks */
    double *ts;
    int32_t *lts;
    Py_ssize_t n, capacity;
    int with_links;
} records_t;

static const Py_ssize_t record_widths[5] = {8, 8, 8, 8, 4};

/* Records per byte each kind of walk found last. Video is ~1 per 1,300 bytes, a flood of small packets ~1 per 86. */
static double pcap_per_byte = 1.0 / 512, pcapng_per_byte = 1.0 / 512;

static void records_point(records_t *r)
{
    r->off = (int64_t *)r->col[0]->data;
    r->cap = (int64_t *)r->col[1]->data;
    r->wire = (int64_t *)r->col[2]->data;
    r->ts = (double *)r->col[3]->data;
    r->lts = r->with_links ? (int32_t *)r->col[4]->data : NULL;
}

/* The columns for a walk of `span` bytes; 0 with the error set. Every record takes 16 bytes or more, so the guess
   is at most span / 16 + 1 entries; growth doubles, so a column's room stays under twice that, and of it only the
   entries written are touched (records_finish trims a block the pool does not take). */
static int records_init(records_t *r, Py_ssize_t span, int with_links, double per_byte)
{
    memset(r, 0, sizeof *r);
    r->with_links = with_links;
    double guess = (double)span * per_byte * 1.125 + 64, most = (double)(span / 16) + 1;
    r->capacity = (Py_ssize_t)(guess < most ? guess : most);
    for (int c = 0; c < (with_links ? 5 : 4); c++)
        if (!(r->col[c] = column_new(r->capacity * record_widths[c])))
            return 0;
    records_point(r);
    return 1;
}

/* Room for one more record; 0 when memory ran out (what was walked stays valid and is freed by records_free). */
static int records_room(records_t *r)
{
    if (r->n < r->capacity)
        return 1;
    Py_ssize_t capacity = r->capacity * 2;
    for (int c = 0; c < (r->with_links ? 5 : 4); c++) {
        column_t *col = r->col[c];
        if (col->room < capacity * record_widths[c]) {
            char *grown = realloc(col->data, capacity * record_widths[c]);
            if (!grown)
                return 0;
            col->data = grown;
            col->room = capacity * record_widths[c];
        }
    }
    records_point(r);
    r->capacity = capacity;
    return 1;
}

/* The columns' lengths set to the records walked, this walk's records per byte kept for the next one. A block
   too large for the pool is cut to its column (a realloc in place or an mremap, not a copy): it lives as long as
   the batch. */
static void records_finish(records_t *r, Py_ssize_t span, double *per_byte)
{
    for (int c = 0; c < (r->with_links ? 5 : 4); c++) {
        column_t *col = r->col[c];
        col->len = r->n * record_widths[c];
        if (!poolable(col->room) && col->room > col->len + POOL_MIN) {
            char *cut = realloc(col->data, col->len > 16 ? col->len : 16);
            if (cut) {
                col->data = cut;
                col->room = col->len > 16 ? col->len : 16;
            }
        }
    }
    if (span > 0)
        *per_byte = (double)r->n / (double)span;
}

/* A tuple of the columns as memoryviews (four, or five with link types), handed over; NULL with the error set. */
static PyObject *records_views(records_t *r)
{
    Py_ssize_t count = r->with_links ? 5 : 4;
    PyObject *out = PyTuple_New(count);
    for (Py_ssize_t c = 0; out && c < count; c++) {
        column_t *col = r->col[c];
        r->col[c] = NULL;
        PyObject *view = column_view(col);
        if (!view) { Py_CLEAR(out); break; }
        PyTuple_SET_ITEM(out, c, view);
    }
    return out;
}

static void records_free(records_t *r)
{
    for (int c = 0; c < 5; c++)
        Py_CLEAR(r->col[c]);
}


static PyObject *walk(PyObject *self, PyObject *args)
{
    Py_buffer view;
    int big_endian, populate = 0;
    double scale;
    unsigned long long max_record;
    if (!PyArg_ParseTuple(args, "y*pdK|p", &view, &big_endian, &scale, &max_record, &populate))
        return NULL;

    const unsigned char *data = (const unsigned char *)view.buf;
    Py_ssize_t end = view.len;
    records_t rec;
    Py_ssize_t pos = 0, bad_offset = -1;
    long long need = 0, bad_length = 0;
    if (!records_init(&rec, end, 0, pcap_per_byte)) {
        records_free(&rec);
        PyBuffer_Release(&view);
        return NULL;
    }
    int no_memory = 0;
    Py_BEGIN_ALLOW_THREADS
    if (populate)
        populate_pages(data, end);
    while (!no_memory && pos + 16 <= end) {
        uint32_t sec = load32(data + pos, big_endian);
        uint32_t frac = load32(data + pos + 4, big_endian);
        uint32_t caplen = load32(data + pos + 8, big_endian);
        uint32_t wirelen = load32(data + pos + 12, big_endian);
        if (caplen > max_record) {
            bad_offset = pos;
            bad_length = caplen;
            break;
        }
        if (pos + 16 + (Py_ssize_t)caplen > end) {
            need = 16 + (long long)caplen;
            break;
        }
        fetch_ahead(data, pos, 16 + (Py_ssize_t)caplen, end);
        if (!records_room(&rec)) { no_memory = 1; break; }
        rec.off[rec.n] = pos + 16;
        rec.cap[rec.n] = caplen;
        rec.wire[rec.n] = wirelen >= caplen ? wirelen : caplen;
        rec.ts[rec.n] = (double)sec + (double)frac * scale;
        rec.n++;
        pos += 16 + caplen;
    }
    if (bad_offset < 0 && need == 0 && pos < end)
        need = 16;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);

    PyObject *columns = NULL, *result = NULL;
    records_finish(&rec, end, &pcap_per_byte);
    if (no_memory)
        PyErr_NoMemory();
    else if ((columns = records_views(&rec)))
        result = Py_BuildValue("(nLnLOOOO)", pos, need, bad_offset, bad_length, PyTuple_GET_ITEM(columns, 0),
                               PyTuple_GET_ITEM(columns, 1), PyTuple_GET_ITEM(columns, 2), PyTuple_GET_ITEM(columns, 3));
    records_free(&rec);
    Py_XDECREF(columns);
    return result;
}


/*
 * decode(buffer, offsets, caplens, linktypes) -> 14 read-only memoryviews (columns), one per field of decode.Decoded:
 * network u8, error u8, vlan u16, src_mac i64, src 16*n, dst 16*n, proto u8, sport i64, dport i64, tcp_flags u8,
 * payload_off i64 (absolute), payload_len i64, fragment u8, head u64. The same rules, in the same order, as the numpy
 * decode in decode.py, which stays the reference (tests compare the two on every fixture and under fuzzing).
 * Headers are followed as deep as they go within the captured bytes: the bounds below are the only limits, and
 * decode.py holds the same numbers. ValueError for offsets, caplens (int64) and linktypes (int32) of different
 * lengths, or a frame not inside the buffer.
 */
#define MAX_VLAN_TAGS 8      /* QinQ and provider stacks are two or three deep: room to spare, still bounded */
#define MAX_EXT_HEADERS 16   /* RFC 8200: each kind once, destination options twice; twice any legal chain */

typedef struct {
    const unsigned char *p;
    long long limit;  /* the captured length: reads past it are zero, as in the numpy matrix */
} frame_t;

static inline long long B(const frame_t *f, long long pos) { return (pos >= 0 && pos < f->limit) ? f->p[pos] : 0; }
static inline long long BE16(const frame_t *f, long long pos) { return (B(f, pos) << 8) | B(f, pos + 1); }

enum { NET_OTHER = 0, NET_IPV4 = 1, NET_IPV6 = 2, NET_ARP = 3 };
enum { ERR_NONE = 0, ERR_TRUNCATED = 1, ERR_BAD_IP = 2, ERR_BAD_TCP = 3, ERR_LINKTYPE = 4, ERR_TOO_DEEP = 5 };

/* One packet's headers as the decode finds them, before they are written to the output columns. */
typedef struct {
    int net, err, frag;
    long long et, l3, mac, vlan, proto, l4, l4_len, sport, dport, flags, poff, plen;
} pkt_t;

static inline int is_tpid(long long et) { return et == 0x8100 || et == 0x88A8 || et == 0x9100; }

/* Ethernet, Linux cooked v1/v2, raw IP and BSD loopback: the ethertype, where layer 3 starts, the source MAC. */
static inline void link_layer(const frame_t *f, int lt, pkt_t *k)
{
    long long cap = f->limit;
    if (lt == 1) {
        k->et = BE16(f, 12); k->l3 = 14;
        for (int j = 6; j < 12; j++) k->mac = (k->mac << 8) | B(f, j);
        if (cap < 14) k->err = ERR_TRUNCATED;
    } else if (lt == 113) {
        k->et = BE16(f, 14); k->l3 = 16;
        if (BE16(f, 4) == 6) for (int j = 6; j < 12; j++) k->mac = (k->mac << 8) | B(f, j);
        if (cap < 16) k->err = ERR_TRUNCATED;
    } else if (lt == 276) {
        k->et = BE16(f, 0); k->l3 = 20;
        if (B(f, 11) == 6) for (int j = 12; j < 18; j++) k->mac = (k->mac << 8) | B(f, j);
        if (cap < 20) k->err = ERR_TRUNCATED;
    } else if (lt == 101 || lt == 12 || lt == 14 || lt == 228 || lt == 229) {
        long long version = B(f, 0) >> 4;
        k->et = version == 4 ? 0x0800 : version == 6 ? 0x86DD : 0;
    } else if (lt == 0 || lt == 108) {
        long long family = lt == 0 ? (B(f, 0) | B(f, 3)) : B(f, 3);
        if (family == 0) family = B(f, 0);
        k->et = family == 2 ? 0x0800 : (family == 10 || family == 24 || family == 28 || family == 30) ? 0x86DD : 0;
        k->l3 = 4;
    } else {
        k->err = ERR_LINKTYPE;
    }
}

/* 802.1Q/QinQ tags; the innermost is the camera VLAN. A stack deeper than MAX_VLAN_TAGS is header_too_deep. */
static inline void vlan_tags(const frame_t *f, pkt_t *k)
{
    for (int j = 0; j < MAX_VLAN_TAGS && is_tpid(k->et); j++) {
        k->vlan = BE16(f, k->l3) & 0x0FFF;
        k->et = BE16(f, k->l3 + 2);
        k->l3 += 4;
        if (f->limit < k->l3) k->err = ERR_TRUNCATED;
    }
    if (is_tpid(k->et) && k->err == ERR_NONE) k->err = ERR_TOO_DEEP;
}

static inline void ipv4(const frame_t *f, pkt_t *k, uint8_t *s16, uint8_t *d16)
{
    long long p = k->l3, ihl = (B(f, p) & 0x0F) * 4;
    int bad = (B(f, p) >> 4) != 4 || ihl < 20;
    long long total = BE16(f, p + 2);
    bad |= total < ihl;
    int shrt = f->limit < p + (ihl > 20 ? ihl : 20);
    k->proto = B(f, p + 9);
    s16[10] = s16[11] = d16[10] = d16[11] = 0xFF;
    for (int j = 0; j < 4; j++) { s16[12 + j] = (uint8_t)B(f, p + 12 + j); d16[12 + j] = (uint8_t)B(f, p + 16 + j); }
    k->l4 = p + ihl;
    k->l4_len = total - ihl > 0 ? total - ihl : 0;
    k->frag = (BE16(f, p + 6) & 0x1FFF) > 0;
    if (shrt) k->err = ERR_TRUNCATED; else if (bad) k->err = ERR_BAD_IP;
}

/* Extension headers laid out as next header, length in 8-byte units after the first 8: hop-by-hop, routing,
 * destination options, Mobility, HIP, Shim6. */
static inline int tlv_ext(long long nxt)
{
    return nxt == 0 || nxt == 43 || nxt == 60 || nxt == 135 || nxt == 139 || nxt == 140;
}

/* Walks the IPv6 extension headers from k->l4 (just past the fixed header) to the transport header. Returns 1 when
 * the chain cannot be followed to its end: more than MAX_EXT_HEADERS, or a header (or the chain) running past the
 * captured bytes. A non-first fragment ends the walk: what follows its header is fragment data. */
static inline int ext_chain(const frame_t *f, pkt_t *k, long long *ext_len)
{
    for (int j = 0;; j++) {
        long long nxt = k->proto, pos = k->l4, step;
        int tlv = tlv_ext(nxt), fr = nxt == 44, ah = nxt == 51;
        if (!(tlv || fr || ah))
            break;
        if (j == MAX_EXT_HEADERS || pos + (fr ? 4 : 2) > f->limit)
            return 1;
        step = tlv ? (B(f, pos + 1) + 1) * 8 : fr ? 8 : (B(f, pos + 1) + 2) * 4;
        k->proto = B(f, pos);
        k->l4 = pos + step;
        *ext_len += step;
        if (fr && (BE16(f, pos + 2) & 0xFFF8)) {
            k->frag = 1;
            return 0;
        }
    }
    return k->l4 > f->limit;
}

static inline void ipv6(const frame_t *f, pkt_t *k, uint8_t *s16, uint8_t *d16)
{
    long long p = k->l3, plen = BE16(f, p + 4), ext_len = 0;
    int bad = (B(f, p) >> 4) != 6;
    int shrt = f->limit < p + 40;
    for (int j = 0; j < 16; j++) { s16[j] = (uint8_t)B(f, p + 8 + j); d16[j] = (uint8_t)B(f, p + 24 + j); }
    k->proto = B(f, p + 6);
    k->l4 = p + 40;
    int deep = ext_chain(f, k, &ext_len);
    k->l4_len = plen - ext_len > 0 ? plen - ext_len : 0;
    if (shrt) {
        k->err = ERR_TRUNCATED;
    } else if (bad) {
        k->err = ERR_BAD_IP;
    } else if (deep) {
        /* Still counted in the flows, port-less like a fragment (decode.Decoded.is_ip): header options must not
         * make a packet vanish. */
        k->err = ERR_TOO_DEEP;
        k->frag = 1;
    }
}

static inline void transport(const frame_t *f, pkt_t *k)
{
    long long p = k->l4;
    k->poff = p;
    k->plen = k->l4_len;
    if ((k->net != NET_IPV4 && k->net != NET_IPV6) || k->err != ERR_NONE || k->frag)
        return;
    if (k->proto == 6) {
        long long doff = (B(f, p + 12) >> 4) * 4;
        int shrt = f->limit < p + 20, bad = doff < 20 || doff > k->l4_len;
        k->sport = BE16(f, p); k->dport = BE16(f, p + 2); k->flags = B(f, p + 13);
        k->poff = p + doff;
        k->plen = k->l4_len - doff > 0 ? k->l4_len - doff : 0;
        if (shrt) k->err = ERR_TRUNCATED; else if (bad) k->err = ERR_BAD_TCP;
    } else if (k->proto == 17 || k->proto == 132) {
        long long hdr = k->proto == 17 ? 8 : 12;
        k->sport = BE16(f, p); k->dport = BE16(f, p + 2);
        k->poff = p + hdr;
        k->plen = k->l4_len - hdr > 0 ? k->l4_len - hdr : 0;
        if (f->limit < p + 8) k->err = ERR_TRUNCATED;
    } else if (k->proto == 1 || k->proto == 58) {
        k->sport = B(f, p); k->dport = B(f, p + 1);
        k->poff = p + 8;
        k->plen = k->l4_len - 8 > 0 ? k->l4_len - 8 : 0;
    }
}

static inline uint64_t head8(const frame_t *f, long long pos)
{
    uint64_t hd = 0;
    if (pos + 8 <= f->limit) {   /* the usual case, one load instead of eight checked ones */
        memcpy(&hd, f->p + pos, 8);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        hd = __builtin_bswap64(hd);
#endif
        return hd;
    }
    for (long long j = pos; j < pos + 8; j++)
        hd = (hd << 8) | (uint64_t)B(f, j);
    return hd;
}

/* The usual packet of a camera VLAN decoded without B()'s bounds check on every byte: Ethernet, untagged or behind
 * one tag (any TPID), IPv4 without options (first byte 0x45), captured to 8 bytes past the IP header at least, and
 * for TCP to the end of its 20-byte header. Every byte read here then lies inside the frame, and none of the general
 * path's "cut short" tests can hold (the longest, TCP's, is that end): what is left is the general path's rules for
 * this one case, in its order (link_layer, vlan_tags, ipv4, transport), each field read directly. 0 (k untouched)
 * hands the packet to the general path, which decodes every other. Two thirds of the decode's instructions on video
 * (422 -> 155 a packet; docs/benchmarks.md, issue 16, 1 December late evening); the numpy decode, the reference of
 * both, is held equal to it by tests/unit/test_decode_fast.py. */
#define FAST_MIN 42   /* untagged: the IP header's 20 bytes and 8 more after the link header's 14 */
static inline int decode_fast(const frame_t *f, int lt, pkt_t *k, uint8_t *s16, uint8_t *d16)
{
    const unsigned char *b = f->p;
    if (lt != 1 || f->limit < FAST_MIN)
        return 0;
    long long et = ((long long)b[12] << 8) | b[13], l3 = 14, vlan = 0;
    if (is_tpid(et)) {
        vlan = (((long long)b[14] << 8) | b[15]) & 0x0FFF;
        et = ((long long)b[16] << 8) | b[17];
        l3 = 18;
    }
    if (et != 0x0800 || f->limit < l3 + 28 || b[l3] != 0x45 || (b[l3 + 9] == 6 && f->limit < l3 + 40))
        return 0;
    uint64_t mac;   /* bytes 6-11 big-endian: one load of bytes 4-11 (a byte at a time, a fifth of the shortcut) */
    memcpy(&mac, b + 4, 8);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    mac = __builtin_bswap64(mac);
#endif
    mac &= 0xFFFFFFFFFFFFULL;
    const unsigned char *ip = b + l3;
    long long total = ((long long)ip[2] << 8) | ip[3];
    k->net = NET_IPV4;
    k->et = et;
    k->l3 = l3;
    k->vlan = vlan;
    k->mac = (long long)mac;
    k->proto = ip[9];
    s16[10] = s16[11] = d16[10] = d16[11] = 0xFF;
    memcpy(s16 + 12, ip + 12, 4);
    memcpy(d16 + 12, ip + 16, 4);
    k->l4 = l3 + 20;
    k->l4_len = total - 20 > 0 ? total - 20 : 0;
    k->frag = ((((long long)ip[6] << 8) | ip[7]) & 0x1FFF) > 0;
    k->err = total < 20 ? ERR_BAD_IP : ERR_NONE;
    long long p = k->l4;
    k->poff = p;
    k->plen = k->l4_len;
    if (k->err != ERR_NONE || k->frag)
        return 1;
    const unsigned char *l4 = b + p;
    if (k->proto == 6) {
        long long doff = (long long)(l4[12] >> 4) * 4;
        k->sport = ((long long)l4[0] << 8) | l4[1];
        k->dport = ((long long)l4[2] << 8) | l4[3];
        k->flags = l4[13];
        k->poff = p + doff;
        k->plen = k->l4_len - doff > 0 ? k->l4_len - doff : 0;
        if (doff < 20 || doff > k->l4_len) k->err = ERR_BAD_TCP;
    } else if (k->proto == 17 || k->proto == 132) {
        long long hdr = k->proto == 17 ? 8 : 12;
        k->sport = ((long long)l4[0] << 8) | l4[1];
        k->dport = ((long long)l4[2] << 8) | l4[3];
        k->poff = p + hdr;
        k->plen = k->l4_len - hdr > 0 ? k->l4_len - hdr : 0;
    } else if (k->proto == 1 || k->proto == 58) {
        k->sport = l4[0];
        k->dport = l4[1];
        k->poff = p + 8;
        k->plen = k->l4_len - 8 > 0 ? k->l4_len - 8 : 0;
    }
    return 1;
}

static PyObject *decode(PyObject *self, PyObject *args)
{
    Py_buffer data, offs, caps, lts;
    if (!PyArg_ParseTuple(args, "y*y*y*y*", &data, &offs, &caps, &lts))
        return NULL;
    Py_ssize_t n = offs.len / 8;
    /* A column must also start at a multiple of its element's size: a memoryview sliced at an odd byte is a
       buffer, and reading its int64s through an aligned pointer is undefined (UBSan). numpy's arrays always are. */
    if (offs.len % 8 || caps.len != offs.len || lts.len != 4 * n || !aligned(&offs, 8) || !aligned(&caps, 8) ||
        !aligned(&lts, 4)) {
        PyErr_SetString(PyExc_ValueError, "decode: offsets, caplens and linktypes of different lengths or unaligned");
        PyBuffer_Release(&data); PyBuffer_Release(&offs); PyBuffer_Release(&caps); PyBuffer_Release(&lts);
        return NULL;
    }
    const int64_t *offset = (const int64_t *)offs.buf;
    const int64_t *caplen = (const int64_t *)caps.buf;
    const int32_t *linktype = (const int32_t *)lts.buf;
    const unsigned char *buf = (const unsigned char *)data.buf;

    /* Pooled columns, not cleared: the loop writes every element of every column for every packet (the addresses
     * too, zeros where a packet has none), so what a block held before never shows through. */
    column_t *out[14];
    Py_ssize_t sizes[14] = {n, n, 2 * n, 8 * n, 16 * n, 16 * n, n, 8 * n, 8 * n, n, 8 * n, 8 * n, n, 8 * n};
    for (int i = 0; i < 14; i++) {
        out[i] = column_new(sizes[i]);
        if (!out[i]) {
            for (int j = 0; j < i; j++) Py_DECREF(out[j]);
            PyBuffer_Release(&data); PyBuffer_Release(&offs); PyBuffer_Release(&caps); PyBuffer_Release(&lts);
            return NULL;
        }
    }
    uint8_t *network = (uint8_t *)out[0]->data;
    uint8_t *error = (uint8_t *)out[1]->data;
    uint16_t *vlan_out = (uint16_t *)out[2]->data;
    int64_t *src_mac = (int64_t *)out[3]->data;
    uint8_t *src = (uint8_t *)out[4]->data;
    uint8_t *dst = (uint8_t *)out[5]->data;
    uint8_t *proto_out = (uint8_t *)out[6]->data;
    int64_t *sport = (int64_t *)out[7]->data;
    int64_t *dport = (int64_t *)out[8]->data;
    uint8_t *tcp_flags = (uint8_t *)out[9]->data;
    int64_t *payload_off = (int64_t *)out[10]->data;
    int64_t *payload_len = (int64_t *)out[11]->data;
    uint8_t *fragment = (uint8_t *)out[12]->data;
    uint64_t *head = (uint64_t *)out[13]->data;

    int outside = 0;   /* a frame not inside the buffer: the batch is refused, nothing read past its end */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        if (offset[i] < 0 || caplen[i] < 0 || offset[i] > data.len - caplen[i]) {
            outside = 1;
            break;
        }
        /* Headers sit a video frame apart, a cache miss each: ask for them a few packets early, both lines (a
         * UDP or TCP payload's first bytes, head8, start 42-66 bytes in, often in the frame's second line). */
        if (i + 8 < n) {   /* an offset not checked yet: the address is made as an integer (buf + offset past the
                              buffer would be undefined), and a prefetch of any address faults nothing */
            uintptr_t ahead = (uintptr_t)buf + (uintptr_t)offset[i + 8];
            __builtin_prefetch((const void *)ahead);
            __builtin_prefetch((const void *)(ahead + 64));
        }
        frame_t f = {buf + offset[i], caplen[i]};
        pkt_t k = {0};
        /* an IPv4 address is its mapped IPv6 form (ipv4 writes bytes 10-15), a packet without IP has zeros */
        memset(src + 16 * i, 0, 16);
        memset(dst + 16 * i, 0, 16);
        if (!decode_fast(&f, linktype[i], &k, src + 16 * i, dst + 16 * i)) {
            link_layer(&f, linktype[i], &k);
            int known = k.err != ERR_LINKTYPE;
            if (known) vlan_tags(&f, &k);
            int net = !known ? NET_OTHER : k.et == 0x0800 ? NET_IPV4 : k.et == 0x86DD ? NET_IPV6
                                         : k.et == 0x0806 ? NET_ARP : NET_OTHER;
            k.net = net;
            /* net tested apart from err: tested together, the compiler read the two adjacent ints just stored as
             * one 64-bit word, a store-forwarding stall on every packet (~12% of the decode, perf). */
            if (k.err == ERR_NONE) {
                if (net == NET_IPV4) ipv4(&f, &k, src + 16 * i, dst + 16 * i);
                else if (net == NET_IPV6) ipv6(&f, &k, src + 16 * i, dst + 16 * i);
            }
            transport(&f, &k);
        }
        network[i] = (uint8_t)k.net;
        error[i] = (uint8_t)k.err;
        vlan_out[i] = (uint16_t)k.vlan;
        src_mac[i] = k.mac;
        proto_out[i] = (uint8_t)k.proto;
        sport[i] = k.sport;
        dport[i] = k.dport;
        tcp_flags[i] = (uint8_t)k.flags;
        payload_off[i] = k.poff + offset[i];
        payload_len[i] = k.plen;
        fragment[i] = (uint8_t)k.frag;
        head[i] = head8(&f, k.poff);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data); PyBuffer_Release(&offs); PyBuffer_Release(&caps); PyBuffer_Release(&lts);
    if (outside) {
        for (int i = 0; i < 14; i++) Py_DECREF(out[i]);
        PyErr_SetString(PyExc_ValueError, "decode: a frame outside the buffer");
        return NULL;
    }
    PyObject *result = PyTuple_New(14);
    for (int i = 0; i < 14; i++) {
        if (!result) {
            Py_DECREF(out[i]);
            continue;
        }
        PyObject *view = column_view(out[i]);   /* the column's reference goes to its view */
        if (!view)
            Py_CLEAR(result);
        else
            PyTuple_SET_ITEM(result, i, view);
    }
    return result;
}


/*
 * group(vlan, proto, fragment, src, dst, sport, dport, tcp_flags, payload_len, src_mac, wirelen, ts, tags, rows
 *       [, hash_mask[, bounds]])
 *     -> (keys, first, first_dir, pkts, bytes, payload, last, flags, side_tags, macs[, offsets])
 * The flow stage's per-batch work: the canonical 40-byte key of each row in `rows` (int64 indices into the decoded
 * arrays), grouped by key with a hash table, and per group and direction (0: A->B, 1: B->A) the packet, byte and
 * payload sums, OR of TCP flags and of `tags` (uint64 per entry of `rows`, or empty), the last source MAC (of the
 * frames that have one: 0 if none has) and the latest timestamp. Groups come out in the order of their first
 * packet, with its position in `rows` and its direction: exactly what flows.group_numpy, the reference, computes
 * with numpy.
 *
 * A key's packets are one group, but for a TCP SYN that follows, in its key, a packet other than a plain SYN (one
 * without RST or FIN): that SYN opens the key's next group. Such a SYN may start a new connection on a port pair
 * whose flow the packets before it closed (a handshake retried after a RST, a port reused after FINs), and the
 * flow table can only tell if it sees it at the head of a group; a run of plain SYNs (retransmissions) cannot
 * close a flow, so it stays one group. Cut this way, a batch gives the flows that the same packets in batches
 * of one would (docs/architecture.md, flows).
 *
 * With `bounds` (int64, 0 first and len(rows) last, in order), each window rows[bounds[w]:bounds[w + 1]] is grouped
 * apart, as a call of its rows alone would group it, its groups after the previous window's, and `offsets` (int64)
 * says where each window's groups start (the groups' number last); `first` is then a position in the whole of
 * `rows`. A decoded slice's one-second windows are grouped in one call this way (flows.Windows): a call per window
 * cost ~4,000 instructions whatever the window held, and control traffic is ~10 packets a window.
 */
#define KEY_BYTES 40
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
/* A packet whose key's previous packet was `before` and whose flags are `now` opens a new group of its key. */
#define REOPENS(before, now) (((now) & TCP_SYN) && ((before) & (TCP_SYN | TCP_RST | TCP_FIN)) != TCP_SYN)

/* The group's key is hashed and compared from the columns themselves, never from its 40 bytes just assembled on the
 * stack: 8-byte loads over those unaligned 18- and 2-byte stores cannot be forwarded from them, and waiting for them
 * was half of the grouping (perf). Only a new group's key is assembled, into the table; the hash decides nothing but
 * where the probing starts. */
static inline uint64_t load64(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

static inline uint64_t mix(uint64_t h, uint64_t w)
{
    h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
    return h ^ (h >> 32);
}

/* Where a key's hash starts: 8 bytes of os.urandom drawn when the module is loaded. The keys are whoever sends on
 * the camera VLAN's choice, and with a starting value anyone can read here they were found offline in seconds
 * (ports between two addresses whose hashes share their low bits): 16,384 such SYNs sent every key of a slice down
 * one run of slots, 281 ms of CPU to group instead of 3 (tests/hostile/test_forged_sources.py). The Lru's SipHash
 * in sensor/_flows.c is keyed for the same reason; this hash runs on every packet not in the previous one's flow, so
 * it stays the multiply-xorshift and only its start is secret. */
static uint64_t group_seed;

/* memcmp's order of an address followed by its port as two big-endian bytes (the key's two ends), without building
 * them: <0, 0 or >0. */
static inline int end_order(const uint8_t *a, unsigned a_port, const uint8_t *b, unsigned b_port)
{
    for (int k = 0; k < 16; k += 8) {
        uint64_t x = __builtin_bswap64(load64(a + k)), y = __builtin_bswap64(load64(b + k));
        if (x != y)
            return x < y ? -1 : 1;
    }
    return (a_port > b_port) - (a_port < b_port);
}

/* Whether the stored 40-byte key is (vlan, proto, lo:lo_port, hi:hi_port). */
static inline int key_is(const uint8_t *key, unsigned vlan, unsigned proto, const uint8_t *lo, unsigned lo_port,
                         const uint8_t *hi, unsigned hi_port)
{
    return load64(key + 3) == load64(lo) && load64(key + 11) == load64(lo + 8) && load64(key + 21) == load64(hi) &&
           load64(key + 29) == load64(hi + 8) && key[0] == (vlan >> 8) && key[1] == (vlan & 0xFF) &&
           key[2] == proto && key[19] == (lo_port >> 8) && key[20] == (lo_port & 0xFF) &&
           key[37] == (hi_port >> 8) && key[38] == (hi_port & 0xFF);
}

static PyObject *group(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    enum { VLAN, PROTO, FRAG, SRC, DST, SPORT, DPORT, FLAGS, PLEN, MAC, WIRE, TS, TAGS, ROWS, NBUF };
    Py_buffer in[NBUF];
    /* the bits of each key's hash that choose its first slot: all but in the tests, which clear them to send every
     * key down one chain and so compare it with every other key (the worst a flood of colliding keys can do) */
    unsigned long long hash_mask = ~0ULL;
    if (nargs < NBUF || nargs > NBUF + 2) {
        PyErr_Format(PyExc_TypeError, "group: %d to %d arguments, not %zd", NBUF, NBUF + 2, nargs);
        return NULL;
    }
    if (nargs > NBUF) {
        hash_mask = PyLong_AsUnsignedLongLongMask(args[NBUF]);   /* "K": any int, its low 64 bits */
        if (hash_mask == (unsigned long long)-1 && PyErr_Occurred())
            return NULL;
    }
    /* windows: each window's rows are grouped apart (bounds: int64, window w is rows[bounds[w]:bounds[w + 1]]) */
    Py_buffer bounds_view = {0};
    if (nargs == NBUF + 2 && PyObject_GetBuffer(args[NBUF + 1], &bounds_view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (buffers(args, NBUF, in) < 0) {
        PyBuffer_Release(&bounds_view);
        return NULL;
    }
    const uint16_t *vlan = in[VLAN].buf;
    const uint8_t *proto = in[PROTO].buf, *frag = in[FRAG].buf, *src = in[SRC].buf, *dst = in[DST].buf;
    const int64_t *sport = in[SPORT].buf, *dport = in[DPORT].buf, *plen = in[PLEN].buf, *mac = in[MAC].buf;
    const int64_t *wire = in[WIRE].buf, *rows = in[ROWS].buf;
    const uint8_t *tcp_flags = in[FLAGS].buf;
    const double *ts = in[TS].buf;
    const uint64_t *tags = in[TAGS].len ? in[TAGS].buf : NULL;
    Py_ssize_t m = in[ROWS].len / 8, n = in[PROTO].len, cap = 16;
    /* Each column of its width for the same n packets, a tag per row, every row one of the n and every window's
     * bounds within the rows and in order: the buffers are read by those indices. */
    static const Py_ssize_t width[TAGS] = {2, 1, 1, 16, 16, 8, 8, 1, 8, 8, 8, 8};
    int bad = in[ROWS].len % 8 != 0 || (tags != NULL && in[TAGS].len != 8 * m) || !aligned(&in[ROWS], 8) ||
              !aligned(&in[TAGS], 8) || (bounds_view.obj != NULL && !aligned(&bounds_view, 8));
    for (int j = 0; j < TAGS; j++)   /* the addresses are read through memcpy: any alignment */
        bad |= in[j].len != width[j] * n || !aligned(&in[j], width[j] <= 8 ? (uintptr_t)width[j] : 1);
    for (Py_ssize_t i = 0; i < m && !bad; i++)
        bad = rows[i] < 0 || rows[i] >= n;
    Py_ssize_t windows = 1, one[2] = {0, m}, most = m;
    const int64_t *bounds = (const int64_t *)one;
    if (!bad && bounds_view.obj != NULL) {
        windows = bounds_view.len / 8 - 1;
        bounds = bounds_view.buf;
        bad = bounds_view.len % 8 != 0 || windows < 0 || bounds[0] != 0 || bounds[windows] != m;
        most = 0;
        for (Py_ssize_t w = 0; w < windows && !bad; w++) {
            bad = bounds[w + 1] < bounds[w];
            if (bounds[w + 1] - bounds[w] > most)
                most = bounds[w + 1] - bounds[w];
        }
    }
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "group: columns of different lengths or unaligned, a row out of range or "
                                          "bounds out of order");
        for (int k = 0; k < NBUF; k++) PyBuffer_Release(&in[k]);
        PyBuffer_Release(&bounds_view);
        return NULL;
    }
    while (cap < 2 * most) cap <<= 1;   /* the slots of the longest window, cleared for each */

    /* Per-group arrays start small and double: a batch of video holds far fewer flows than packets, and zeroing
     * room for one group per packet cost more than the grouping. */
    Py_ssize_t gcap = m < 256 ? (m ? m : 1) : 256;
    int32_t *slot;
    uint8_t *keys, *first_dir, *flags, *last_flags;   /* last_flags: each group's latest packet's, for REOPENS */
    int64_t *first, *pkts, *nbytes, *payload, *macs;
    uint64_t *side_tags;
    double *last;
    /* Below 256 rows gcap is the rows' number, which the groups never outgrow (a row makes at most one), so the
     * arrays never grow: they are carved from one zeroed block, as a dozen small allocations and frees were a third
     * of grouping a one-second window of control traffic. 8-byte columns first, so that each stays aligned. */
    char *block = NULL;
    if (m < 256) {
        block = calloc(1, gcap * (8 + 5 * 16 + 8 + KEY_BYTES + 1 + 2 + 1) + cap * sizeof(int32_t));
        char *at = block;
#define CARVE(ptr, bytes) do { ptr = (void *)at; at += (bytes); } while (0)
        if (block != NULL) {
            CARVE(first, gcap * 8); CARVE(pkts, 2 * gcap * 8); CARVE(nbytes, 2 * gcap * 8);
            CARVE(payload, 2 * gcap * 8); CARVE(macs, 2 * gcap * 8); CARVE(side_tags, 2 * gcap * 8);
            CARVE(last, gcap * 8); CARVE(slot, cap * sizeof(int32_t)); CARVE(keys, gcap * KEY_BYTES);
            CARVE(first_dir, gcap); CARVE(flags, 2 * gcap); CARVE(last_flags, gcap);
        } else {
            slot = NULL; keys = first_dir = flags = last_flags = NULL; first = pkts = nbytes = payload = macs = NULL;
            side_tags = NULL; last = NULL;
        }
#undef CARVE
    } else {
        slot = malloc(cap * sizeof(int32_t));
        keys = malloc(gcap * KEY_BYTES);
        first = malloc(gcap * 8);
        first_dir = malloc(gcap);
        pkts = calloc(2 * gcap, 8); nbytes = calloc(2 * gcap, 8); payload = calloc(2 * gcap, 8);
        macs = calloc(2 * gcap, 8);
        side_tags = calloc(2 * gcap, 8);
        flags = calloc(2 * gcap, 1);
        last_flags = malloc(gcap);
        last = malloc(gcap * sizeof(double));
    }
    PyObject *out[11] = {NULL};
    Py_ssize_t u = 0;
    int no_memory = !slot || !keys || !first || !first_dir || !pkts || !nbytes || !payload || !macs || !side_tags ||
                    !flags || !last_flags || !last;
    int64_t *offsets = NULL;   /* each window's first group, and the groups' number after the last */
    if (bounds_view.obj != NULL) {
        out[10] = PyBytes_FromStringAndSize(NULL, 8 * (windows + 1));
        if (out[10] == NULL)
            goto done;
        offsets = (int64_t *)PyBytes_AS_STRING(out[10]);
        offsets[0] = 0;
    }

    /* The GIL is kept: a call groups one window of at most a decode slice (pipeline.DECODE_SLICE rows, well under
     * a millisecond), and giving the GIL up for it cost the pipeline more than the grouping, waiting to take it back
     * from sensor.overlap's thread busy in Python (the pipeline is the critical path there): vlan100, the calls'
     * wall time 0.040 s released, 0.018 s kept (docs/benchmarks.md, issue 16, 1 December afternoon). */
    for (Py_ssize_t w = 0; w < windows && !no_memory; w++) {
    Py_ssize_t wcap = 16;   /* a window's slots: as a call of its rows alone would have them */
    while (wcap < 2 * (bounds[w + 1] - bounds[w])) wcap <<= 1;
    memset(slot, 0xFF, wcap * sizeof(int32_t));
    int64_t prev = -1;
    Py_ssize_t prev_g = 0;
    int prev_d = 0;
    for (Py_ssize_t i = bounds[w]; i < bounds[w + 1] && !no_memory; i++) {
        int64_t r = rows[i];
        Py_ssize_t g;
        int d;
        /* Video comes in bursts of one flow: a row with the previous row's addresses, ports, VLAN and protocol
         * is in the previous row's group and direction, without hashing (unless it opens the key's next group). */
        if (prev >= 0 && sport[r] == sport[prev] && dport[r] == dport[prev] && proto[r] == proto[prev] &&
            vlan[r] == vlan[prev] && frag[r] == frag[prev] && load64(src + 16 * r) == load64(src + 16 * prev) &&
            load64(src + 16 * r + 8) == load64(src + 16 * prev + 8) &&
            load64(dst + 16 * r) == load64(dst + 16 * prev) && load64(dst + 16 * r + 8) == load64(dst + 16 * prev + 8) &&
            !REOPENS(last_flags[prev_g], tcp_flags[r])) {
            g = prev_g;
            d = prev_d;
            goto add;
        }
        int portless = proto[r] == 1 || proto[r] == 58 || frag[r];
        unsigned sp = portless ? 0 : (unsigned)(sport[r] & 0xFFFF), dp = portless ? 0 : (unsigned)(dport[r] & 0xFFFF);
        const uint8_t *a = src + 16 * r, *b = dst + 16 * r;
        int a_is_src = end_order(a, sp, b, dp) <= 0;
        const uint8_t *lo = a_is_src ? a : b, *hi = a_is_src ? b : a;
        unsigned lo_port = a_is_src ? sp : dp, hi_port = a_is_src ? dp : sp, v = vlan[r], pr = proto[r];
        uint64_t hash = mix(mix(mix(mix(mix(group_seed, load64(lo)), load64(lo + 8)), load64(hi)),
                                load64(hi + 8)), ((uint64_t)v << 40) | ((uint64_t)pr << 32) | (lo_port << 16) | hi_port);
        Py_ssize_t h = (Py_ssize_t)(hash & hash_mask & (uint64_t)(wcap - 1));
        for (;;) {
            g = slot[h];
            if (g < 0 || key_is(keys + g * KEY_BYTES, v, pr, lo, lo_port, hi, hi_port))
                break;
            h = (h + 1) & (wcap - 1);
        }
        d = !a_is_src;
        if (g >= 0 && REOPENS(last_flags[g], tcp_flags[r]))
            g = -1;   /* the key's slot goes to its new group: the packets after this one are the new group's */
        if (g < 0) {
            if (u == gcap) {   /* never with a carved block (m < 256: u < m = gcap here) */
                Py_ssize_t was = gcap;
                gcap *= 2;
#define GROW(ptr, bytes) do { void *p2 = realloc(ptr, (bytes)); if (!p2) no_memory = 1; else ptr = p2; } while (0)
                GROW(keys, gcap * KEY_BYTES); GROW(first, gcap * 8); GROW(first_dir, gcap); GROW(last, gcap * 8);
                GROW(pkts, 2 * gcap * 8); GROW(nbytes, 2 * gcap * 8); GROW(payload, 2 * gcap * 8);
                GROW(macs, 2 * gcap * 8); GROW(side_tags, 2 * gcap * 8); GROW(flags, 2 * gcap);
                GROW(last_flags, gcap);
#undef GROW
                if (no_memory)
                    break;
                memset(pkts + 2 * was, 0, 2 * was * 8); memset(nbytes + 2 * was, 0, 2 * was * 8);
                memset(payload + 2 * was, 0, 2 * was * 8); memset(macs + 2 * was, 0, 2 * was * 8);
                memset(side_tags + 2 * was, 0, 2 * was * 8); memset(flags + 2 * was, 0, 2 * was);
            }
            g = u++;
            slot[h] = (int32_t)g;
            uint8_t *key = keys + g * KEY_BYTES;
            key[0] = (uint8_t)(v >> 8); key[1] = (uint8_t)v; key[2] = (uint8_t)pr;
            memcpy(key + 3, lo, 16);
            key[19] = (uint8_t)(lo_port >> 8); key[20] = (uint8_t)lo_port;
            memcpy(key + 21, hi, 16);
            key[37] = (uint8_t)(hi_port >> 8); key[38] = (uint8_t)hi_port;
            key[39] = 0;
            first[g] = i;
            first_dir[g] = (uint8_t)d;
            last[g] = -INFINITY;
        }
        prev = r;
        prev_g = g;
        prev_d = d;
    add:;
        Py_ssize_t s = 2 * g + d;
        pkts[s] += 1;
        nbytes[s] += wire[r];
        payload[s] += plen[r];
        flags[s] |= tcp_flags[r];
        last_flags[g] = tcp_flags[r];
        if (tags) side_tags[s] |= tags[i];
        if (mac[r]) macs[s] = mac[r];   /* a frame without a link layer leaves it, as across batches */
        if (ts[r] > last[g]) last[g] = ts[r];
    }
    if (offsets != NULL)
        offsets[w + 1] = u;
    }
    if (no_memory) {
        PyErr_NoMemory();
        goto done;
    }

    Py_ssize_t sizes[10] = {u * KEY_BYTES, u * 8, u, 16 * u, 16 * u, 16 * u, u * 8, 2 * u, 16 * u, 16 * u};
    for (int k = 0; k < 10; k++) {
        out[k] = PyBytes_FromStringAndSize(NULL, sizes[k]);
        if (!out[k]) goto done;
    }
    {
        uint8_t *o_keys = (uint8_t *)PyBytes_AS_STRING(out[0]), *o_dir = (uint8_t *)PyBytes_AS_STRING(out[2]);
        int64_t *o_first = (int64_t *)PyBytes_AS_STRING(out[1]), *o_pkts = (int64_t *)PyBytes_AS_STRING(out[3]);
        int64_t *o_bytes = (int64_t *)PyBytes_AS_STRING(out[4]), *o_payload = (int64_t *)PyBytes_AS_STRING(out[5]);
        double *o_last = (double *)PyBytes_AS_STRING(out[6]);
        uint8_t *o_flags = (uint8_t *)PyBytes_AS_STRING(out[7]);
        uint64_t *o_tags = (uint64_t *)PyBytes_AS_STRING(out[8]);
        int64_t *o_macs = (int64_t *)PyBytes_AS_STRING(out[9]);
        memcpy(o_keys, keys, u * KEY_BYTES);
        memcpy(o_first, first, u * 8);
        memcpy(o_dir, first_dir, u);
        memcpy(o_last, last, u * 8);
        memcpy(o_pkts, pkts, 16 * u);
        memcpy(o_bytes, nbytes, 16 * u);
        memcpy(o_payload, payload, 16 * u);
        memcpy(o_flags, flags, 2 * u);
        memcpy(o_tags, side_tags, 16 * u);
        memcpy(o_macs, macs, 16 * u);
    }
done:
    if (block != NULL) {
        free(block);
    } else if (m >= 256) {
        free(slot); free(keys); free(first); free(first_dir); free(pkts); free(nbytes); free(payload); free(macs);
        free(side_tags); free(flags); free(last_flags); free(last);
    }
    for (int k = 0; k < NBUF; k++) PyBuffer_Release(&in[k]);
    PyBuffer_Release(&bounds_view);
    int answers = offsets != NULL ? 11 : 10;
    if (PyErr_Occurred()) {
        for (int k = 0; k < 11; k++) Py_XDECREF(out[k]);
        return NULL;
    }
    PyObject *result = PyTuple_New(answers);   /* not Py_BuildValue: its format walk, once a window */
    for (int k = 0; k < answers; k++) {
        if (result != NULL)
            PyTuple_SET_ITEM(result, k, out[k]);
        else
            Py_DECREF(out[k]);
    }
    return result;
}


/*
 * tags(proto, payload_len, head, rows, prefix_values, prefix_masks, rtp, pppp, pppp_drw, tls, signature_base)
 *     -> uint64 per entry of `rows`
 * The payload-profile bits of each row (sensor.tags.PayloadTagger.tags_numpy is the reference): RTP v2 with an
 * audio/video payload type, CS2 PPPP framing and its DRW data frames, TLS records, and bit signature_base + i where
 * the first payload bytes match prefix i (value under mask). Rows with fewer than four payload bytes get none. Every
 * bit comes in as an argument: sensor/tags.py defines them, and this file has no copy to keep in step.
 */
static PyObject *tags(PyObject *self, PyObject *args)
{
    Py_buffer in[6];
    unsigned long long tag_rtp, tag_pppp, tag_drw, tag_tls;
    int base;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*KKKKi", &in[0], &in[1], &in[2], &in[3], &in[4], &in[5], &tag_rtp,
                          &tag_pppp, &tag_drw, &tag_tls, &base))
        return NULL;
    const uint8_t *proto = in[0].buf;
    const int64_t *plen = in[1].buf, *rows = in[3].buf;
    const uint64_t *head = in[2].buf, *values = in[4].buf, *masks = in[5].buf;
    Py_ssize_t n = in[0].len, m = in[3].len / 8, k = in[4].len / 8;
    /* Each row indexes the three per-packet columns, and prefix j sets bit base + j: rows out of range (checked in
       the loop), columns of other lengths or unaligned, or a bit past the 64th would read past a buffer or shift
       out of a word. */
    int bad = in[1].len != 8 * n || in[2].len != 8 * n || in[3].len % 8 || in[4].len % 8 || in[5].len != in[4].len ||
              base < 0 || base + k > 64;
    for (int j = 1; j < 6 && !bad; j++)
        bad = !aligned(&in[j], 8);
    if (bad) {
        for (int j = 0; j < 6; j++) PyBuffer_Release(&in[j]);
        PyErr_SetString(PyExc_ValueError, "tags: columns of different lengths or unaligned, or too many prefixes");
        return NULL;
    }
    /* A prefix can match only a payload whose first byte its own first byte (under its mask) allows: per first
     * byte, the prefixes it allows, so that a row tries those few instead of every prefix (trying all of them was
     * most of the tagging of video, whose rows all carry payload; perf). Made only for calls of many rows. */
    int by_byte = k <= 64 && m >= 256;
    uint64_t allowed[256];
    if (by_byte) {
        for (unsigned b = 0; b < 256; b++) {
            uint64_t can = 0;
            for (Py_ssize_t j = 0; j < k; j++)
                if ((b & (unsigned)(masks[j] >> 56)) == (unsigned)(values[j] >> 56))
                    can |= 1ULL << j;
            allowed[b] = can;
        }
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, m * 8);
    if (out) {
        uint64_t *t = (uint64_t *)PyBytes_AS_STRING(out);
        for (Py_ssize_t i = 0; i < m; i++) {
            int64_t r = rows[i];
            if ((uint64_t)r >= (uint64_t)n) {   /* checked here, not in a pass of its own: +13% on video's tags */
                bad = 1;
                break;
            }
            uint64_t h = head[r], bits = 0;
            if (plen[r] < 4) {
                t[i] = 0;
                continue;
            }
            unsigned b0 = (unsigned)(h >> 56), b1 = (unsigned)(h >> 48) & 0xFF;
            unsigned b2 = (unsigned)(h >> 40) & 0xFF, b3 = (unsigned)(h >> 32) & 0xFF, pt = b1 & 0x7F;
            if (proto[r] == 17) {
                if ((b0 & 0xC0) == 0x80 && plen[r] >= 12 && (pt <= 34 || (pt >= 96 && pt <= 127)))
                    bits |= tag_rtp;
                if (b0 == 0xF1 && (int64_t)((b2 << 8) | b3) == plen[r] - 4) {
                    bits |= tag_pppp;
                    if (b1 == 0xD0)
                        bits |= tag_drw;
                }
            } else if (proto[r] == 6 && (b0 == 0x16 || b0 == 0x17) && b1 == 0x03) {
                bits |= tag_tls;
            }
            if (by_byte) {
                for (uint64_t can = allowed[b0]; can; can &= can - 1) {
                    int j = __builtin_ctzll(can);
                    if ((h & masks[j]) == values[j])
                        bits |= 1ULL << (base + j);
                }
            } else {
                for (Py_ssize_t j = 0; j < k; j++)
                    if ((h & masks[j]) == values[j])
                        bits |= 1ULL << (base + j);
            }
            t[i] = bits;
        }
    }
    for (int j = 0; j < 6; j++) PyBuffer_Release(&in[j]);
    if (bad) {
        Py_CLEAR(out);
        PyErr_SetString(PyExc_ValueError, "tags: a row out of range");
    }
    return out;
}

/*
 * fill(fd, buffer, start, stop, timeout, gather) -> bytes read, 0 at end of file, None if nothing came
 * The live pump's read loop, without the GIL: wait up to `timeout` seconds for the pipe to be readable, then keep
 * reading into buffer[start:stop] what arrives for up to `gather` seconds (napping 0.5 ms after a short read, so
 * dumpcap's few-KiB writes gather) or until the range is full. In Python each read would have to win the GIL back
 * from the thread doing the analysis, which under load is slower than the pipe fills.
 */
static PyObject *fill(PyObject *self, PyObject *args)
{
    int fd;
    Py_buffer view;
    Py_ssize_t start, stop;
    double timeout, gather;
    if (!PyArg_ParseTuple(args, "iw*nndd", &fd, &view, &start, &stop, &timeout, &gather))
        return NULL;
    if (start < 0 || stop > view.len || start >= stop) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "fill: range outside the buffer");
        return NULL;
    }
    char *buf = (char *)view.buf;
    Py_ssize_t got = 0;
    int err = 0, eof = 0, ready = 0;
    Py_BEGIN_ALLOW_THREADS
    struct pollfd pfd = {fd, POLLIN, 0};
    int r;
    do {
        r = poll(&pfd, 1, (int)(timeout * 1000));
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        err = errno;
    } else if (r > 0) {
        ready = 1;
        struct timespec t0, now;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
            ssize_t n = read(fd, buf + start + got, (size_t)(stop - start - got));
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                err = errno;
                break;
            }
            if (n == 0) {
                eof = got == 0;   /* readable yet nothing to read: the writer has gone */
                break;
            }
            got += n;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (start + got >= stop || (now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9 >= gather)
                break;
            if (n < 256 * 1024) {
                struct timespec nap = {0, 500000};
                nanosleep(&nap, NULL);
            }
            if (poll(&pfd, 1, 0) <= 0 || !(pfd.revents & POLLIN))
                break;   /* nothing more came: hand over what there is */
        }
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (err && got == 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (!ready)
        Py_RETURN_NONE;
    return PyLong_FromSsize_t(eof ? 0 : got);
}

/*
 * route(is_ip, proto, payload_len, head, sport, dport, identity_ports, http_prefixes, banner_prefixes, post)
 *     -> (dns, identity, searches, named, banners, posts), lists of row numbers in ascending order
 * The few rows of a batch that the enrichment parsers want (sensor.enrich.routing.route_numpy is the reference):
 * DNS over UDP with a header's worth of payload; UDP to or from a discovery port (identity_ports: one byte per
 * port), and of those the ones to 1900 (SSDP searches); TCP with six or more payload bytes opening a TLS
 * ClientHello or an HTTP request (named), a banner (first four bytes one of banner_prefixes, or a TLS server's
 * ServerHello or Certificate record) or a POST.
 */
static PyObject *route(PyObject *self, PyObject *args)
{
    Py_buffer in[9];
    long long post;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*y*L", &in[0], &in[1], &in[2], &in[3], &in[4], &in[5], &in[6],
                          &in[7], &in[8], &post))
        return NULL;
    const uint8_t *is_ip = in[0].buf, *proto = in[1].buf, *id_port = in[6].buf;
    const int64_t *plen = in[2].buf, *sport = in[4].buf, *dport = in[5].buf, *http = in[7].buf, *banner = in[8].buf;
    const uint64_t *head = in[3].buf;
    Py_ssize_t n = in[0].len, n_http = in[7].len / 8, n_banner = in[8].len / 8;
    PyObject *out[6] = {NULL};
    /* Rows are read from every column by index up to is_ip's length: each column must have that many entries of
       its width, aligned to it, or the loop reads past its end. */
    int failed = in[1].len != n || in[2].len != 8 * n || in[3].len != 8 * n || in[4].len != 8 * n ||
                 in[5].len != 8 * n || in[7].len % 8 || in[8].len % 8;
    for (int k = 2; k < 9 && !failed; k++)
        failed = k != 6 && !aligned(&in[k], 8);
    if (failed)
        PyErr_SetString(PyExc_ValueError, "route: columns of different lengths or unaligned");
    else if ((failed = in[6].len != 65536))
        PyErr_SetString(PyExc_ValueError, "route: identity_ports must have one byte per port");
    for (int k = 0; k < 6 && !failed; k++)
        failed = (out[k] = PyList_New(0)) == NULL;
    /* The first payload bytes a TCP row any of the three wants can open with (a TLS handshake record's 0x16, each
     * prefix's first byte): most TCP rows of video (RTSP interleaved, TLS application data) open with none, and
     * skip the prefix loops (a TCP row tried all seventeen prefixes, a third of the call on video). */
    uint8_t opens[256] = {0};
    opens[0x16] = 1;
    opens[(post >> 24) & 0xFF] = 1;
    for (Py_ssize_t j = 0; j < n_http; j++)
        opens[(http[j] >> 24) & 0xFF] = 1;
    for (Py_ssize_t j = 0; j < n_banner; j++)
        opens[(banner[j] >> 24) & 0xFF] = 1;
#define ADD(k) do { PyObject *v = PyLong_FromSsize_t(i); \
                    if (!v || PyList_Append(out[k], v) < 0) failed = 1; Py_XDECREF(v); } while (0)
    for (Py_ssize_t i = 0; i < n && !failed; i++) {
        if (!is_ip[i])
            continue;
        if (proto[i] == 17 && plen[i] > 0) {
            int64_t sp = sport[i] & 0xFFFF, dp = dport[i] & 0xFFFF;
            if ((sp == 53 || dp == 53) && plen[i] >= 12)
                ADD(0);
            if (id_port[sp] || id_port[dp]) {
                ADD(1);
                if (dp == 1900)
                    ADD(2);
            }
        } else if (proto[i] == 6 && plen[i] >= 6 && opens[head[i] >> 56]) {
            int64_t first4 = (int64_t)(head[i] >> 32);
            int named = (first4 >> 24) == 0x16 && ((head[i] >> 16) & 0xFF) == 1;
            for (Py_ssize_t j = 0; j < n_http && !named; j++)
                named = first4 == http[j];
            if (named)
                ADD(3);
            /* a TLS server's handshake flight (ServerHello, or a Certificate in its own record): the certificate */
            int64_t hs = (int64_t)((head[i] >> 16) & 0xFF);
            int banner_row = (first4 >> 24) == 0x16 && ((first4 >> 16) & 0xFF) == 3 && (hs == 2 || hs == 11);
            for (Py_ssize_t j = 0; j < n_banner && !banner_row; j++)
                banner_row = first4 == banner[j];
            if (banner_row)
                ADD(4);
            if (first4 == post)
                ADD(5);
        }
    }
#undef ADD
    for (int k = 0; k < 9; k++) PyBuffer_Release(&in[k]);
    if (failed) {
        for (int k = 0; k < 6; k++) Py_XDECREF(out[k]);
        return NULL;
    }
    return Py_BuildValue("(NNNNNN)", out[0], out[1], out[2], out[3], out[4], out[5]);
}

/*
 * forest(left, right, feature, threshold, leaf_value, roots, x, n_features) -> bytes of float64, one per row of x
 * The summed leaf values (path lengths) of each row of x (float32, n_features per row) over the Isolation Forest's
 * trees, stacked as sensor.model.forest.Forest holds them: node arrays of every tree end to end (int64 children
 * and features, float64 thresholds and leaf values), a leaf being its own child, roots[t] the first node of tree t.
 * Summed tree by tree in order, in double, as Forest._depths does: the same sums, bit for bit. Children must come
 * after their parent (the model loader checks it); a node breaking that ends the walk with ValueError.
 */
static PyObject *forest(PyObject *self, PyObject *args)
{
    Py_buffer in[7];
    Py_ssize_t nf;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*n", &in[0], &in[1], &in[2], &in[3], &in[4], &in[5], &in[6], &nf))
        return NULL;
    const int64_t *left = in[0].buf, *right = in[1].buf, *feature = in[2].buf, *roots = in[5].buf;
    const double *threshold = in[3].buf, *leaf = in[4].buf;
    const float *x = in[6].buf;
    Py_ssize_t nodes = in[0].len / 8, trees = in[5].len / 8, rows = nf > 0 ? in[6].len / 4 / nf : 0;
    int bad = in[1].len / 8 != nodes || in[2].len / 8 != nodes || in[3].len / 8 != nodes || in[4].len / 8 != nodes;
    for (int j = 0; j < 7; j++)
        bad |= !aligned(&in[j], j == 6 ? 4 : 8);
    PyObject *out = bad ? NULL : PyBytes_FromStringAndSize(NULL, rows * 8);
    if (out) {
        double *depth = (double *)PyBytes_AS_STRING(out);
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t r = 0; r < rows; r++)
            depth[r] = 0.0;
        /* With enough rows (a walk per row and tree, several steps each, against one pass over the nodes) the
         * forest is checked once, node by node, before any row walks it: a leaf is its own left child; an inner
         * node's feature is in range and both its children come after it and inside the arrays. Every walk then
         * goes from a root to a leaf with no check per step (the checks were a third of the walk's instructions).
         * With few rows (a small site's look) each step is checked instead, as the walks alone did: cheaper than
         * the pass. Either way the same depths, and a broken forest refused with the same ValueError (on the
         * checked pass whether or not a row reaches the broken node); the roots are always checked. */
        int checked = rows * trees < nodes;
        for (Py_ssize_t t = 0; t < trees; t++)
            if (roots[t] < 0 || roots[t] >= nodes)
                bad = 1;
        for (Py_ssize_t n = 0; n < nodes && !checked && !bad; n++) {
            int64_t l = left[n], r = right[n], f = feature[n];
            if (l != n && (f < 0 || f >= nf || l <= n || l >= nodes || r <= n || r >= nodes))
                bad = 1;
        }
        /* Tree by tree, every row through one tree before the next: a tree's few hundred nodes stay in cache while
         * the rows walk it (row by row, every row fetched the whole forest, megabytes, again). Each row still adds
         * the trees in order, from 0.0: the same sums. */
        for (Py_ssize_t t = 0; t < trees && !bad; t++) {
            int64_t root = roots[t];
            for (Py_ssize_t r = 0; r < rows && !bad; r++) {
                const float *v = x + r * nf;
                int64_t node = root, l;
                if (checked) {
                    while ((l = left[node]) != node) {
                        int64_t f = feature[node], next;
                        if (f < 0 || f >= nf) {
                            bad = 1;
                            break;
                        }
                        next = (double)v[f] <= threshold[node] ? l : right[node];
                        if (next <= node || next >= nodes) {
                            bad = 1;
                            break;
                        }
                        node = next;
                    }
                } else {
                    while ((l = left[node]) != node)
                        node = (double)v[feature[node]] <= threshold[node] ? l : right[node];
                }
                depth[r] += leaf[node];
            }
        }
        Py_END_ALLOW_THREADS
    }
    for (int j = 0; j < 7; j++) PyBuffer_Release(&in[j]);
    if (bad) {
        Py_XDECREF(out);
        PyErr_SetString(PyExc_ValueError, "forest: not a stacked forest (arrays or a child index out of range)");
        return NULL;
    }
    return out;
}

/*
 * walk_pcapng(buffer, start, big_endian, max_block, linktypes, scales, offsets, snaps, last_ts) ->
 *     (stop, offsets, caplens, wirelens, stamps, linktypes)
 * The pcapng twin of walk: from `start`, takes consecutive enhanced (6) and simple (3) packet blocks that are
 * whole and sound, exactly as CaptureReader._ng_block_at/_ng_packet/_ng_simple_packet would, and stops at the
 * first block that is anything else: another kind (section header, interface description, statistics, ...),
 * cut short by the buffer's end, or damaged in any way the Python walk reports. `stop` is that block's offset;
 * the Python walk takes it from there, so every error message, byte offset and `need` stays its own. The section's
 * interfaces come in as four columns (int32 link type, float64 timestamp scale and offset, int64 snap length);
 * last_ts is the time a simple packet block reuses when no packet came before it in this walk.
 * Every length is checked against max_block and the buffer before it is used: nothing is read outside the buffer.
 */
static PyObject *walk_pcapng(PyObject *self, PyObject *args)
{
    Py_buffer view, lt_view, sc_view, of_view, sn_view;
    Py_ssize_t start;
    int big_endian;
    unsigned long long max_block;
    double last_ts;
    if (!PyArg_ParseTuple(args, "y*npKy*y*y*y*d", &view, &start, &big_endian, &max_block, &lt_view, &sc_view,
                          &of_view, &sn_view, &last_ts))
        return NULL;
    if (!aligned(&lt_view, 4) || !aligned(&sc_view, 8) || !aligned(&of_view, 8) || !aligned(&sn_view, 8)) {
        PyBuffer_Release(&view);
        PyBuffer_Release(&lt_view); PyBuffer_Release(&sc_view); PyBuffer_Release(&of_view); PyBuffer_Release(&sn_view);
        PyErr_SetString(PyExc_ValueError, "walk_pcapng: interface columns not aligned to their element size");
        return NULL;
    }
    Py_ssize_t n_ifaces = lt_view.len / 4;
    if (sc_view.len / 8 < n_ifaces) n_ifaces = sc_view.len / 8;
    if (of_view.len / 8 < n_ifaces) n_ifaces = of_view.len / 8;
    if (sn_view.len / 8 < n_ifaces) n_ifaces = sn_view.len / 8;
    const int32_t *if_lt = (const int32_t *)lt_view.buf;
    const double *if_scale = (const double *)sc_view.buf, *if_offset = (const double *)of_view.buf;
    const int64_t *if_snap = (const int64_t *)sn_view.buf;

    const unsigned char *data = (const unsigned char *)view.buf;
    Py_ssize_t end = view.len;
    if (start < 0 || start > end) start = end;
    records_t rec;
    Py_ssize_t pos = start;
    int no_memory = 0;
    if (!records_init(&rec, end - start, 1, pcapng_per_byte)) {
        records_free(&rec);
        PyBuffer_Release(&view);
        PyBuffer_Release(&lt_view); PyBuffer_Release(&sc_view); PyBuffer_Release(&of_view); PyBuffer_Release(&sn_view);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    while (!no_memory && pos + 8 <= end) {
        uint32_t btype = load32(data + pos, big_endian);
        uint32_t blen = load32(data + pos + 4, big_endian);
        if (btype != 6 && btype != 3)
            break;
        if (blen < 12 || blen % 4 || blen > max_block || blen < (btype == 6 ? 32u : 16u))
            break;
        if (pos + (Py_ssize_t)blen > end)
            break;
        if (load32(data + pos + blen - 4, big_endian) != blen)
            break;
        fetch_ahead(data, pos, blen, end);
        int64_t caplen, wirelen, frame;
        int32_t linktype;
        double stamp;
        if (btype == 6) {
            uint32_t iface = load32(data + pos + 8, big_endian);
            uint64_t hi = load32(data + pos + 12, big_endian), lo = load32(data + pos + 16, big_endian);
            caplen = load32(data + pos + 20, big_endian);
            wirelen = load32(data + pos + 24, big_endian);
            frame = pos + 28;
            if ((Py_ssize_t)iface >= n_ifaces || frame + caplen > pos + (int64_t)blen - 4)
                break;
            if (wirelen < caplen) wirelen = caplen;
            linktype = if_lt[iface];
            /* Two roundings, as in Python: the product, then the sum (x86-64's baseline has no fused multiply-add). */
            double scaled = (double)((hi << 32) | lo) * if_scale[iface];
            stamp = scaled + if_offset[iface];
            last_ts = stamp;
        } else {
            if (n_ifaces == 0)
                break;
            wirelen = load32(data + pos + 8, big_endian);
            caplen = wirelen;
            if ((int64_t)blen - 16 < caplen) caplen = (int64_t)blen - 16;
            if (if_snap[0] && if_snap[0] < caplen) caplen = if_snap[0];
            frame = pos + 12;
            linktype = if_lt[0];
            stamp = last_ts;   /* no timestamp of its own: the previous packet's */
        }
        if (!records_room(&rec)) { no_memory = 1; break; }
        rec.off[rec.n] = frame;
        rec.cap[rec.n] = caplen;
        rec.wire[rec.n] = wirelen;
        rec.ts[rec.n] = stamp;
        rec.lts[rec.n] = linktype;
        rec.n++;
        pos += blen;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyBuffer_Release(&lt_view); PyBuffer_Release(&sc_view); PyBuffer_Release(&of_view); PyBuffer_Release(&sn_view);

    PyObject *columns = NULL, *result = NULL;
    records_finish(&rec, end - start, &pcapng_per_byte);
    if (no_memory)
        PyErr_NoMemory();
    else if ((columns = records_views(&rec)))
        result = Py_BuildValue("(nOOOOO)", pos, PyTuple_GET_ITEM(columns, 0), PyTuple_GET_ITEM(columns, 1),
                               PyTuple_GET_ITEM(columns, 2), PyTuple_GET_ITEM(columns, 3), PyTuple_GET_ITEM(columns, 4));
    records_free(&rec);
    Py_XDECREF(columns);
    return result;
}


static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, "Walk classic-pcap records in a buffer."},
    {"walk_pcapng", walk_pcapng, METH_VARARGS, "Walk consecutive pcapng packet blocks in a buffer."},
    {"decode", decode, METH_VARARGS, "Decode link, network and transport headers of a batch."},
    {"group", (PyCFunction)(void (*)(void))group, METH_FASTCALL, "Group a batch's packets by flow key and sum them per direction."},
    {"tags", tags, METH_VARARGS, "Payload-profile bits of a batch's rows from their first payload bytes."},
    {"route", route, METH_VARARGS, "The rows of a batch that the enrichment parsers want."},
    {"fill", fill, METH_VARARGS, "Read a pipe into a buffer without the GIL, gathering small writes."},
    {"forest", forest, METH_VARARGS, "Path lengths of vectors summed over an Isolation Forest's stacked trees."},
    {"pooled", pooled_now, METH_VARARGS, "The blocks and bytes the columns' pool holds now (emptied first if asked)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_walk", NULL, -1, methods};

PyMODINIT_FUNC PyInit__walk(void)
{
    if (PyType_Ready(&column_type) < 0 || draw_secret(&group_seed, sizeof group_seed, "_walk") < 0)
        return NULL;
    return PyModule_Create(&module);
}
