/*
 * The flow table's per-flow step, compiled: what one batch's groups (flows.group) do to the table. The same work,
 * in the same order and with the same results, as FlowTable._apply_python, the reference it shadows and the
 * fallback when this extension cannot be built; tests/unit/test_flows_compiled.py holds the two to each other.
 *
 * The table stays what Python reads (four LRU-ordered tables of flows.Flow by canonical key: the Lru type below,
 * or OrderedDicts, its reference): the loop over groups moves here, and on Lru tables it reaches their entries
 * directly. A new flow is allocated and its slots filled directly (no __init__ frame), an existing
 * one has its slots read and written through their member offsets, and the FlowUpdates are built the same way:
 * on a flood of new flows that loop was most of the flow stage's time.
 *
 * apply(tables, end, types, keys, first_dir, orig_is_a, orig_port, resp_port, vlan, first_ts, pkts, nbytes,
 *       payload, flags, tags, macs, last[, apart[, lo, hi]]) -> (updates, created), or with apart (new flows,
 *       updates of the others, created): a new flow's update is what the flow holds, so the flow alone stands for
 *       it. With lo and hi, only groups lo to hi are applied (one window's, of a slice grouped at once).
 * tables: (tcp, closed, udp, other), four Lrus or OrderedDicts; end: FlowTable._end, called as end([flow], "idle") when a
 * closed flow's port pair is reused by a SYN; types: (Flow, FlowUpdate, ports, shared_macs, shared_mac):
 * the classes, flows._PORTS, the flows._MACS dict and flows._shared_mac (called when a MAC is not yet shared).
 * Per group: keys 40 bytes; first_dir, orig_is_a uint8; orig_port, resp_port, vlan int64 (a new flow's, already
 * oriented); first_ts, last float64; pkts, nbytes, payload int64 x2; flags uint8 x2; tags uint64 x2 or empty
 * (no tags); macs int64 x2. Columns x2 are A->B then B->A, as flows.Groups.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "_buffers.h"
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#define KEY 40
#define P_TCP 6
#define P_UDP 17
#define F_FIN 0x01
#define F_SYN 0x02
#define F_RST 0x04

enum { KEYS, FIRST_DIR, ORIG_IS_A, OPORT, RPORT, VLAN, FIRST_TS, PKTS, NBYTES, PAYLOAD, FLAGS, TAGS, MACS, LAST,
       NBUF };

/* Flow's slots, in this order; their offsets are read from the class's member descriptors on each call. */
static const char *FLOW_SLOTS[] = {"key", "vlan", "proto", "orig_port", "resp_port", "first", "last", "orig_pkts",
                                   "resp_pkts", "orig_bytes", "resp_bytes", "orig_payload", "resp_payload",
                                   "orig_flags", "resp_flags", "orig_mac", "resp_mac", "name", "closed", "context",
                                   "orig_is_a", "orig_tags", "resp_tags"};
enum { S_KEY, S_VLAN, S_PROTO, S_OPORT, S_RPORT, S_FIRST, S_LAST, S_OPKTS, S_RPKTS, S_OBYTES, S_RBYTES, S_OPAY,
       S_RPAY, S_OFLAGS, S_RFLAGS, S_OMAC, S_RMAC, S_NAME, S_CLOSED, S_CONTEXT, S_ORIG_IS_A, S_OTAGS, S_RTAGS,
       NSLOTS };
static const char *UPDATE_SLOTS[] = {"flow", "new", "ts", "orig_pkts", "resp_pkts", "orig_bytes", "resp_bytes"};
#define NUPDATE 7

typedef struct {
    PyTypeObject *flow_type, *update_type;
    Py_ssize_t flow_off[NSLOTS], update_off[NUPDATE];
    PyObject *ports, *macs, *shared_mac, *end, *idle;
    int lazy_ports;   /* Flow's port slots are lazy_port: a new flow leaves them empty */
    int lru;          /* the four tables are Lru: their entries are reached directly (one_group_lru) */
    int flow_whole, update_whole;   /* the slots are the whole object: allocated without zeroing (filled) */
    int64_t memo_mac[2];            /* the last two MACs shared in this call and their ints (strong references) */
    PyObject *memo_int[2];
    int memo_next;
    /* apart, with a second's pending updates (flows.defer_updates): a known flow's group is added to its update
     * there, or starts it, instead of making an update object of its own; none for a flow in `waiting` */
    PyObject *pending, *waiting;
} Env;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* ---- the flow table's LRU tables in C (issue 16, the flow table in C) ---------------------------------------------
 * Lru: an insertion-ordered map of bytes keys (a flow's canonical 40-byte key) to values (its Flow), with the
 * OrderedDict methods the flow table uses: len, in, [], get, pop, popitem, move_to_end, clear, and iteration (keys,
 * values, items) oldest first. flows.FlowTable keeps its four LRU tables (tcp, closed, udp, other) as Lru when this
 * extension is built, OrderedDicts otherwise: the OrderedDict is the reference (tests/unit/test_flows_table.py holds
 * the two to each other on random sequences of operations, colliding keys included), and apply and evict below reach
 * an Lru's entries directly instead of through the mapping protocol. The link's sightings (enrich.link, a
 * BoundedLRU of bytes keys) are kept in one too, which sight below walks.
 *
 * Layout: a dense array of 32-byte entries (key, value, hash, and the LRU list's prev/next as entry indices; freed
 * entries are reused through a free list), and an open-addressing index of uint64 slots (the hash's low 32 bits
 * beside the entry's number: a probe that meets another key, or a deletion's backward shift, never reads its
 * entry), linear probing kept at most half full, with backward-shift deletion (no tombstones: a table that evicts
 * a flow per new flow never fills up with them). An OrderedDict spends a dict entry, its index, a linked-list node
 * and a fast-node pointer per key.
 *
 * Hash: SipHash-1-3 of the key's bytes (CPython's own string hash), keyed by a 128-bit secret drawn from os.urandom
 * when the module is loaded, not from PYTHONHASHSEED: the keys are chosen by whoever sends packets on the camera
 * VLAN, and with a known hash function they could send a batch of keys that all probe one run of the index. */
static uint64_t sip_k0, sip_k1;

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND do { v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32); v2 += v3; v3 = ROTL(v3, 16); \
                      v3 ^= v2; v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0; v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; \
                      v2 = ROTL(v2, 32); } while (0)

static uint64_t siphash13(const uint8_t *p, size_t len)
{
    uint64_t v0 = sip_k0 ^ 0x736f6d6570736575ULL, v1 = sip_k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = sip_k0 ^ 0x6c7967656e657261ULL, v3 = sip_k1 ^ 0x7465646279746573ULL;
    uint64_t b = (uint64_t)len << 56, m;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        memcpy(&m, p + i, 8);   /* little-endian hosts: the reference's byte order; elsewhere a different but
                                   equally keyed hash, which is all a table needs */
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t j = 0; i + j < len; j++)
        b |= (uint64_t)p[i + j] << (8 * j);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

#define NIL 0xFFFFFFFFu
#define LRU_MAX 0x40000000   /* entries: the index (twice as many uint32) stays addressable */

typedef struct {
    PyObject *key, *value;    /* strong references; key is bytes */
    uint64_t hash;
    uint32_t prev, next;      /* LRU list (oldest at head); `next` links the free list of unused entries */
} LruEntry;

typedef struct {
    PyObject_HEAD
    LruEntry *ent;
    uint64_t *index;          /* mask + 1 slots; 0 empty, else the hash's low 32 bits << 32 | (entry + 1) */
    Py_ssize_t n;             /* keys held */
    uint32_t ent_cap, ent_top, free, mask, head, tail;
    uint64_t stamp;           /* changes with every insertion, deletion and move: iterators check it */
} Lru;

static PyTypeObject LruType;

static int key_hash(PyObject *key, uint64_t *h)
{
    if (!PyBytes_Check(key))
        return 0;
    *h = siphash13((const uint8_t *)PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key));
    return 1;
}

/* The index slot holding `k` (len bytes, hash h), or -1. No Python code runs. */
static Py_ssize_t lru_find(Lru *t, const char *k, Py_ssize_t len, uint64_t h)
{
    if (t->index == NULL)
        return -1;
    uint32_t tag = (uint32_t)h;
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        uint64_t s = t->index[i];
        if (s == 0)
            return -1;
        if ((uint32_t)(s >> 32) != tag)
            continue;
        LruEntry *e = &t->ent[(uint32_t)s - 1];
        if (e->hash == h && PyBytes_GET_SIZE(e->key) == len && memcmp(PyBytes_AS_STRING(e->key), k, len) == 0)
            return (Py_ssize_t)i;
    }
}

static void lru_place(Lru *t, uint64_t slot)
{
    size_t i = (slot >> 32) & t->mask;
    while (t->index[i] != 0)
        i = (i + 1) & t->mask;
    t->index[i] = slot;
}

#define SLOT_OF(h, e) ((uint64_t)(uint32_t)(h) << 32 | ((uint64_t)(e) + 1))
#define ENTRY(t, i) ((uint32_t)(t)->index[i] - 1)

/* Room for one more key: the index at most half full, a free entry. -1 with MemoryError. */
static int lru_reserve(Lru *t)
{
    if (t->n >= LRU_MAX) {
        PyErr_SetString(PyExc_MemoryError, "Lru: too many keys");
        return -1;
    }
    if (t->index == NULL || (size_t)(t->n + 1) * 2 > (size_t)t->mask + 1) {
        size_t size = t->index == NULL ? 8 : ((size_t)t->mask + 1) * 2;
        uint64_t *index = PyMem_Calloc(size, sizeof(uint64_t)), *old = t->index;
        if (index == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        size_t old_size = old == NULL ? 0 : (size_t)t->mask + 1;
        t->index = index;
        t->mask = (uint32_t)(size - 1);
        for (size_t i = 0; i < old_size; i++)
            if (old[i] != 0)
                lru_place(t, old[i]);
        PyMem_Free(old);
    }
    if (t->free == NIL && t->ent_top == t->ent_cap) {
        uint32_t cap = t->ent_cap ? t->ent_cap * 2 : 4;
        LruEntry *ent = PyMem_Realloc(t->ent, (size_t)cap * sizeof(LruEntry));
        if (ent == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->ent = ent;
        t->ent_cap = cap;
    }
    return 0;
}

static void lru_link_tail(Lru *t, uint32_t e)
{
    t->ent[e].next = NIL;
    t->ent[e].prev = t->tail;
    if (t->tail != NIL)
        t->ent[t->tail].next = e;
    else
        t->head = e;
    t->tail = e;
}

static void lru_unlink(Lru *t, uint32_t e)
{
    LruEntry *x = &t->ent[e];
    if (x->prev != NIL)
        t->ent[x->prev].next = x->next;
    else
        t->head = x->next;
    if (x->next != NIL)
        t->ent[x->next].prev = x->prev;
    else
        t->tail = x->prev;
}

/* Append a key known to be absent (new references stolen); lru_reserve first. No Python code runs. */
static void lru_append(Lru *t, PyObject *key, PyObject *value, uint64_t h)
{
    uint32_t e;
    if (t->free != NIL) {
        e = t->free;
        t->free = t->ent[e].next;
    } else {
        e = t->ent_top++;
    }
    t->ent[e].key = key;
    t->ent[e].value = value;
    t->ent[e].hash = h;
    lru_link_tail(t, e);
    lru_place(t, SLOT_OF(h, e));
    t->n++;
    t->stamp++;
}

/* Take out the key at index slot i: its key and value references move to the caller. No Python code runs. */
static void lru_remove(Lru *t, size_t i, PyObject **key, PyObject **value)
{
    uint32_t e = ENTRY(t, i);
    *key = t->ent[e].key;
    *value = t->ent[e].value;
    t->ent[e].key = t->ent[e].value = NULL;
    lru_unlink(t, e);
    t->ent[e].next = t->free;
    t->free = e;
    /* backward shift: each later key of the run whose probe path passes slot i moves into it */
    for (size_t j = (i + 1) & t->mask;; j = (j + 1) & t->mask) {
        uint64_t s = t->index[j];
        if (s == 0)
            break;
        size_t home = (s >> 32) & t->mask;
        if (((j - home) & t->mask) >= ((j - i) & t->mask)) {
            t->index[i] = s;
            i = j;
        }
    }
    t->index[i] = 0;
    t->n--;
    t->stamp++;
}

/* key -> value (new references taken): replaced in place if present (its position kept, as an OrderedDict), else
 * appended at the recent end. */
static int lru_set(Lru *t, PyObject *key, PyObject *value, uint64_t h)
{
    Py_ssize_t i = lru_find(t, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), h);
    if (i >= 0) {
        LruEntry *e = &t->ent[ENTRY(t, i)];
        PyObject *old = e->value;
        e->value = Py_NewRef(value);
        Py_DECREF(old);
        return 0;
    }
    if (lru_reserve(t) < 0)
        return -1;
    lru_append(t, Py_NewRef(key), Py_NewRef(value), h);
    return 0;
}

static void lru_free_all(Lru *t)
{
    LruEntry *ent = t->ent;
    uint32_t top = t->ent_top;
    PyMem_Free(t->index);
    t->ent = NULL;
    t->index = NULL;
    t->n = 0;
    t->ent_cap = t->ent_top = t->mask = 0;
    t->free = t->head = t->tail = NIL;
    t->stamp++;
    for (uint32_t e = 0; e < top; e++) {   /* released once the table is consistent (empty) */
        Py_XDECREF(ent[e].key);
        Py_XDECREF(ent[e].value);
    }
    PyMem_Free(ent);
}

static PyObject *lru_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if ((kwds != NULL && PyDict_GET_SIZE(kwds)) || PyTuple_GET_SIZE(args)) {
        PyErr_SetString(PyExc_TypeError, "Lru() takes no arguments");
        return NULL;
    }
    Lru *t = (Lru *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->free = t->head = t->tail = NIL;
    return (PyObject *)t;
}

static int lru_traverse(PyObject *self, visitproc visit, void *arg)
{
    Lru *t = (Lru *)self;
    for (uint32_t e = 0; e < t->ent_top; e++)   /* the array in its order, not the list's: sequential reads */
        Py_VISIT(t->ent[e].value);          /* a free entry's is NULL */
    return 0;
}

static int lru_clear_gc(PyObject *self)
{
    lru_free_all((Lru *)self);
    return 0;
}

static void lru_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    lru_free_all((Lru *)self);
    Py_TYPE(self)->tp_free(self);
}

static Py_ssize_t lru_len(PyObject *self)
{
    return ((Lru *)self)->n;
}

/* The index slot of `key`, -1 if absent (any key that is not bytes is absent). */
static Py_ssize_t lru_lookup(Lru *t, PyObject *key)
{
    uint64_t h;
    if (!key_hash(key, &h))
        return -1;
    return lru_find(t, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), h);
}

static PyObject *lru_getitem(PyObject *self, PyObject *key)
{
    Lru *t = (Lru *)self;
    Py_ssize_t i = lru_lookup(t, key);
    if (i < 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return Py_NewRef(t->ent[ENTRY(t, i)].value);
}

static int lru_ass(PyObject *self, PyObject *key, PyObject *value)
{
    Lru *t = (Lru *)self;
    uint64_t h;
    if (value != NULL) {
        if (!key_hash(key, &h)) {
            PyErr_SetString(PyExc_TypeError, "Lru: keys are bytes");
            return -1;
        }
        return lru_set(t, key, value, h);
    }
    Py_ssize_t i = lru_lookup(t, key);
    if (i < 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return -1;
    }
    PyObject *k, *v;
    lru_remove(t, i, &k, &v);
    Py_DECREF(k);
    Py_DECREF(v);
    return 0;
}

static int lru_contains(PyObject *self, PyObject *key)
{
    return lru_lookup((Lru *)self, key) >= 0;
}

static PyObject *lru_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(key, default=None)");
        return NULL;
    }
    Lru *t = (Lru *)self;
    Py_ssize_t i = lru_lookup(t, args[0]);
    if (i >= 0)
        return Py_NewRef(t->ent[ENTRY(t, i)].value);
    return Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

static PyObject *lru_pop(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "pop(key[, default])");
        return NULL;
    }
    Lru *t = (Lru *)self;
    Py_ssize_t i = lru_lookup(t, args[0]);
    if (i < 0) {
        if (nargs == 2)
            return Py_NewRef(args[1]);
        PyErr_SetObject(PyExc_KeyError, args[0]);
        return NULL;
    }
    PyObject *k, *v;
    lru_remove(t, i, &k, &v);
    Py_DECREF(k);
    return v;
}

static Py_ssize_t lru_slot_of(Lru *t, uint32_t e)
{
    return lru_find(t, PyBytes_AS_STRING(t->ent[e].key), PyBytes_GET_SIZE(t->ent[e].key), t->ent[e].hash);
}

static PyObject *lru_popitem(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"last", NULL};
    int last = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p:popitem", kwlist, &last))
        return NULL;
    Lru *t = (Lru *)self;
    if (t->n == 0) {
        PyErr_SetString(PyExc_KeyError, "dictionary is empty");
        return NULL;
    }
    PyObject *k, *v;
    lru_remove(t, lru_slot_of(t, last ? t->tail : t->head), &k, &v);
    PyObject *item = PyTuple_New(2);
    if (item == NULL) {
        Py_DECREF(k);
        Py_DECREF(v);
        return NULL;
    }
    PyTuple_SET_ITEM(item, 0, k);
    PyTuple_SET_ITEM(item, 1, v);
    return item;
}

static PyObject *lru_move_to_end(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"key", "last", NULL};
    PyObject *key;
    int last = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|p:move_to_end", kwlist, &key, &last))
        return NULL;
    Lru *t = (Lru *)self;
    Py_ssize_t i = lru_lookup(t, key);
    if (i < 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    uint32_t e = ENTRY(t, i);
    lru_unlink(t, e);
    if (last) {
        lru_link_tail(t, e);
    } else {
        t->ent[e].prev = NIL;
        t->ent[e].next = t->head;
        if (t->head != NIL)
            t->ent[t->head].prev = e;
        else
            t->tail = e;
        t->head = e;
    }
    t->stamp++;
    Py_RETURN_NONE;
}

static PyObject *lru_clear(PyObject *self, PyObject *unused)
{
    lru_free_all((Lru *)self);
    Py_RETURN_NONE;
}

/* Iteration, oldest first: keys (0), values (1) or items (2); a table changed meanwhile raises, as an
 * OrderedDict's iteration does. */
typedef struct {
    PyObject_HEAD
    Lru *t;
    uint32_t at;
    uint64_t stamp;
    int kind;
} LruIter;

static PyTypeObject LruIterType;

static PyObject *lru_iter_kind(PyObject *self, int kind)
{
    Lru *t = (Lru *)self;
    LruIter *it = PyObject_GC_New(LruIter, &LruIterType);
    if (it == NULL)
        return NULL;
    it->t = (Lru *)Py_NewRef(self);
    it->at = t->head;
    it->stamp = t->stamp;
    it->kind = kind;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

static PyObject *lru_iter(PyObject *self) { return lru_iter_kind(self, 0); }
static PyObject *lru_keys(PyObject *self, PyObject *unused) { return lru_iter_kind(self, 0); }
static PyObject *lru_values(PyObject *self, PyObject *unused) { return lru_iter_kind(self, 1); }
static PyObject *lru_items(PyObject *self, PyObject *unused) { return lru_iter_kind(self, 2); }

static PyObject *lru_iter_next(PyObject *self)
{
    LruIter *it = (LruIter *)self;
    Lru *t = it->t;
    if (t == NULL || it->at == NIL)
        return NULL;
    if (t->stamp != it->stamp) {
        it->at = NIL;
        PyErr_SetString(PyExc_RuntimeError, "Lru mutated during iteration");
        return NULL;
    }
    LruEntry *e = &t->ent[it->at];
    it->at = e->next;
    if (it->kind == 0)
        return Py_NewRef(e->key);
    if (it->kind == 1)
        return Py_NewRef(e->value);
    return PyTuple_Pack(2, e->key, e->value);
}

static int lru_iter_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(((LruIter *)self)->t);
    return 0;
}

static void lru_iter_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_XDECREF(((LruIter *)self)->t);
    PyObject_GC_Del(self);
}

static PyTypeObject LruIterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sensor._flows.LruIterator",
    .tp_basicsize = sizeof(LruIter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = lru_iter_dealloc,
    .tp_traverse = lru_iter_traverse,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = lru_iter_next,
};

static PyMethodDef lru_methods[] = {
    {"get", (PyCFunction)(void (*)(void))lru_get, METH_FASTCALL, "get(key, default=None)"},
    {"pop", (PyCFunction)(void (*)(void))lru_pop, METH_FASTCALL, "pop(key[, default])"},
    {"popitem", (PyCFunction)(void (*)(void))lru_popitem, METH_VARARGS | METH_KEYWORDS, "popitem(last=True)"},
    {"move_to_end", (PyCFunction)(void (*)(void))lru_move_to_end, METH_VARARGS | METH_KEYWORDS,
     "move_to_end(key, last=True)"},
    {"clear", lru_clear, METH_NOARGS, "clear()"},
    {"keys", lru_keys, METH_NOARGS, "The keys, oldest first (an iterator)."},
    {"values", lru_values, METH_NOARGS, "The values, oldest first (an iterator)."},
    {"items", lru_items, METH_NOARGS, "(key, value) pairs, oldest first (an iterator)."},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods lru_as_mapping = {lru_len, lru_getitem, lru_ass};
static PySequenceMethods lru_as_sequence = {.sq_length = lru_len, .sq_contains = lru_contains};

static PyTypeObject LruType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sensor._flows.Lru",
    .tp_basicsize = sizeof(Lru),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "An insertion-ordered bytes-keyed table: the flow table's and the link sightings' OrderedDict, in C.",
    .tp_new = lru_new,
    .tp_dealloc = lru_dealloc,
    .tp_traverse = lru_traverse,
    .tp_clear = lru_clear_gc,
    .tp_iter = lru_iter,
    .tp_methods = lru_methods,
    .tp_as_mapping = &lru_as_mapping,
    .tp_as_sequence = &lru_as_sequence,
    .tp_hash = PyObject_HashNotImplemented,
};
/* ---- end of the LRU tables in C ---- */


/* ---- ports read from the key when first asked (flowtable helper, issue 16) ----------------------------------------
 * A new flow's two port slots are left empty by apply and filled from its key the first time they are read: setting
 * them meant a reference to one of flows._PORTS' 65,536 shared ints each, and on a flood of random port pairs those
 * ints and the tuple's entries are cache misses (~0.1 µs a flow measured with perf, again when the flow is freed),
 * for flows no stage ever asks the ports of. The key holds them (A's port at 19:21, B's at 37:39, big-endian) and
 * the originator is the A side when orig_is_a: the same value flows.orient gave (a portless flow's key has zeros).
 * lazy_port(flow_type, name, ports, orig) replaces the member descriptor `name` of Flow's slot; the slot keeps what
 * is set or first read, so later reads cost a slot read. */
typedef struct {
    PyObject_HEAD
    PyTypeObject *owner;          /* flows.Flow: the slots are read by offset, from its instances only */
    Py_ssize_t off, key_off, is_a_off;
    int orig;                     /* 1: the originator's port, 0: the responder's */
    PyObject *ports, *name;       /* flows._PORTS; the slot's name */
} LazyPort;

static PyTypeObject LazyPortType;

static int lazy_port_owned(LazyPort *d, PyObject *obj)
{
    if (PyObject_TypeCheck(obj, d->owner))
        return 0;
    PyErr_Format(PyExc_TypeError, "%U of a %s read from something else", d->name, d->owner->tp_name);
    return -1;
}

static PyObject *lazy_port_get(PyObject *self, PyObject *obj, PyObject *type)
{
    LazyPort *d = (LazyPort *)self;
    if (obj == NULL)
        return Py_NewRef(self);
    if (lazy_port_owned(d, obj) < 0)
        return NULL;
    PyObject *v = SLOT(obj, d->off), *key = SLOT(obj, d->key_off), *is_a = SLOT(obj, d->is_a_off);
    if (v != NULL)
        return Py_NewRef(v);
    if (key == NULL || !PyBytes_Check(key) || PyBytes_GET_SIZE(key) != KEY || is_a == NULL) {
        PyErr_Format(PyExc_AttributeError, "%U: neither set nor a flow key to read it from", d->name);
        return NULL;
    }
    int truth = PyObject_IsTrue(is_a);   /* as flows: `o = 0 if flow.orig_is_a else 1` */
    if (truth < 0)
        return NULL;
    const uint8_t *k = (const uint8_t *)PyBytes_AS_STRING(key) + (truth == d->orig ? 19 : 37);
    v = PyTuple_GET_ITEM(d->ports, k[0] << 8 | k[1]);
    SLOT(obj, d->off) = Py_NewRef(v);
    return Py_NewRef(v);
}

static int lazy_port_set(PyObject *self, PyObject *obj, PyObject *value)
{
    LazyPort *d = (LazyPort *)self;
    if (lazy_port_owned(d, obj) < 0)
        return -1;
    Py_XSETREF(SLOT(obj, d->off), Py_XNewRef(value));   /* deleting empties it: the key's port is read again */
    return 0;
}

static void lazy_port_dealloc(PyObject *self)
{
    LazyPort *d = (LazyPort *)self;
    Py_XDECREF(d->owner);
    Py_XDECREF(d->ports);
    Py_XDECREF(d->name);
    Py_TYPE(self)->tp_free(self);
}

static PyTypeObject LazyPortType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sensor._flows.lazy_port",
    .tp_basicsize = sizeof(LazyPort),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A Flow's port slot, read from its key when first asked.",
    .tp_dealloc = lazy_port_dealloc,
    .tp_descr_get = lazy_port_get,
    .tp_descr_set = lazy_port_set,
};

static Py_ssize_t member_offset(PyTypeObject *type, const char *name)
{
    PyObject *d = PyDict_GetItemString(type->tp_dict, name);   /* borrowed; once per descriptor made */
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)
            || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
        PyErr_Format(PyExc_TypeError, "lazy_port: %s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    return ((PyMemberDescrObject *)d)->d_member->offset;
}

static PyObject *lazy_port(PyObject *module, PyObject *args)
{
    PyObject *owner, *name, *ports;
    int orig;
    if (!PyArg_ParseTuple(args, "O!UO!p", &PyType_Type, &owner, &name, &PyTuple_Type, &ports, &orig))
        return NULL;
    if (PyTuple_GET_SIZE(ports) != 0x10000) {
        PyErr_SetString(PyExc_ValueError, "lazy_port: ports must be the 65,536 shared port ints");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)owner;
    const char *text = PyUnicode_AsUTF8(name);
    Py_ssize_t off, key_off, is_a_off;
    if (text == NULL || (off = member_offset(type, text)) < 0 || (key_off = member_offset(type, "key")) < 0
            || (is_a_off = member_offset(type, "orig_is_a")) < 0)
        return NULL;
    LazyPort *d = PyObject_New(LazyPort, &LazyPortType);
    if (d == NULL)
        return NULL;
    d->owner = (PyTypeObject *)Py_NewRef(owner);
    d->off = off;
    d->key_off = key_off;
    d->is_a_off = is_a_off;
    d->orig = orig;
    d->ports = Py_NewRef(ports);
    d->name = Py_NewRef(name);
    return (PyObject *)d;
}
/* ---- end of ports read from the key ---- */

/* ---- slot names interned once (window helper, issue 16) ----------------------------------------------------------
 * Looking the 30 slot names up by C string made each a new str per call (PyDict_GetItemString): ~2 µs of a call
 * that, for a one-second window of camera control traffic, applies a group or two. The names are made once. */
static PyObject *flow_names[NSLOTS], *update_names[NUPDATE], *evict_names[1];

static int offsets_interned(PyTypeObject *type, const char **names, PyObject **interned, int n, Py_ssize_t *out)
{
    for (int i = 0; i < n; i++) {
        if (interned[i] == NULL && (interned[i] = PyUnicode_InternFromString(names[i])) == NULL)
            return -1;
        PyObject *d = PyDict_GetItemWithError(type->tp_dict, interned[i]);   /* borrowed */
        if (d == NULL && PyErr_Occurred())
            return -1;
        if (d != NULL && Py_IS_TYPE(d, &LazyPortType) && ((LazyPort *)d)->owner == type) {
            out[i] = ((LazyPort *)d)->off;   /* a port read from the key when first asked (lazy_port) */
            continue;
        }
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)
                || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "apply: %s.%s is not a slot", type->tp_name, names[i]);
            return -1;
        }
        out[i] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    return 0;
}
/* ---- end of slot names interned once ---- */

/* Replace a slot's value with a new reference (stolen); NULL (a failed allocation) leaves it and returns -1. */
static int put(PyObject *obj, Py_ssize_t off, PyObject *value)
{
    if (value == NULL)
        return -1;
    Py_XSETREF(SLOT(obj, off), value);
    return 0;
}

static int add_int(PyObject *obj, Py_ssize_t off, int64_t delta)
{
    if (delta == 0)
        return 0;
    PyObject *sum, *d = PyLong_FromLongLong(delta);
    if (d == NULL)
        return -1;
    sum = PyNumber_Add(SLOT(obj, off), d);   /* Python ints: a counter never wraps */
    Py_DECREF(d);
    return put(obj, off, sum);
}

static int or_bits(PyObject *obj, Py_ssize_t off, uint64_t bits)
{
    if (bits == 0)
        return 0;
    PyObject *v, *b = PyLong_FromUnsignedLongLong(bits);
    if (b == NULL)
        return -1;
    v = PyNumber_Or(SLOT(obj, off), b);
    Py_DECREF(b);
    return put(obj, off, v);
}

/* flows._shared_mac: the one int object for this MAC, from the shared dict or (not there yet) the Python helper,
 * which keeps that dict bounded. */
static PyObject *shared_mac_lookup(Env *env, int64_t mac);

/* A flood comes through one router: a new flow's two MACs are, batch after batch, the same two, and looking them up
 * made an int and a dict probe each (~4% of apply, perf). The last two of this call are kept; any value kept is
 * the one the shared dict gave for that MAC (equal, and shared while the dict holds it). */
static PyObject *shared_mac(Env *env, int64_t mac)
{
    for (int i = 0; i < 2; i++)
        if (env->memo_int[i] != NULL && env->memo_mac[i] == mac)
            return Py_NewRef(env->memo_int[i]);
    PyObject *v = shared_mac_lookup(env, mac);
    if (v != NULL) {
        Py_XSETREF(env->memo_int[env->memo_next], Py_NewRef(v));
        env->memo_mac[env->memo_next] = mac;
        env->memo_next ^= 1;
    }
    return v;
}

static PyObject *shared_mac_lookup(Env *env, int64_t mac)
{
    PyObject *k = PyLong_FromLongLong(mac), *v;
    if (k == NULL)
        return NULL;
    v = PyDict_GetItemWithError(env->macs, k);
    if (v != NULL) {
        Py_DECREF(k);
        return Py_NewRef(v);
    }
    if (PyErr_Occurred()) {
        Py_DECREF(k);
        return NULL;
    }
    v = PyObject_CallOneArg(env->shared_mac, k);
    Py_DECREF(k);
    return v;
}

static int set_mac(Env *env, PyObject *flow, Py_ssize_t off, int64_t mac)
{
    if (mac == 0)
        return 0;
    int64_t now = PyLong_AsLongLong(SLOT(flow, off));
    if (now == -1 && PyErr_Occurred())
        return -1;
    return mac == now ? 0 : put(flow, off, shared_mac(env, mac));
}

/* The counters of a new flow straight from its group's sums (what add_group would add to zeros), oriented by its
 * originator: no intermediate ints. */
static void new_counters(PyObject **values, Py_buffer *in, Py_ssize_t g, int o, int has_tags)
{
    int r = 1 - o;
    const int64_t *pkts = (const int64_t *)in[PKTS].buf + 2 * g, *nbytes = (const int64_t *)in[NBYTES].buf + 2 * g;
    const int64_t *payload = (const int64_t *)in[PAYLOAD].buf + 2 * g;
    const uint8_t *flags = (const uint8_t *)in[FLAGS].buf + 2 * g;
    values[S_OPKTS] = PyLong_FromLongLong(pkts[o]);
    values[S_RPKTS] = PyLong_FromLongLong(pkts[r]);
    values[S_OBYTES] = PyLong_FromLongLong(nbytes[o]);
    values[S_RBYTES] = PyLong_FromLongLong(nbytes[r]);
    values[S_OPAY] = PyLong_FromLongLong(payload[o]);
    values[S_RPAY] = PyLong_FromLongLong(payload[r]);
    values[S_OFLAGS] = PyLong_FromLong(flags[o]);
    values[S_RFLAGS] = PyLong_FromLong(flags[r]);
    if (has_tags) {
        const uint64_t *tags = (const uint64_t *)in[TAGS].buf + 2 * g;
        values[S_OTAGS] = PyLong_FromUnsignedLongLong(tags[o]);
        values[S_RTAGS] = PyLong_FromUnsignedLongLong(tags[r]);
    } else {
        values[S_OTAGS] = PyLong_FromLong(0);
        values[S_RTAGS] = PyLong_FromLong(0);
    }
}

/* An object of `type` whose n slots (at `off`) take the new references in `values`, left out of the cyclic
 * collector (callers make only objects that cannot be in a cycle); NULL if a value or the object could not be made,
 * every value then released. */
static PyObject *filled(PyTypeObject *type, const Py_ssize_t *off, PyObject **values, int n, uint32_t empty,
                        int whole)
{
    PyObject *obj = NULL;
    int ok = 1;
    for (int s = 0; s < n; s++)
        ok &= values[s] != NULL || (empty >> s & 1);   /* `empty`: slots left unset (NULL) on purpose */
    /* `whole` (whole_object): every byte past the header is one of the n slots written below, so the generic
     * allocator's zeroing, tracking and our untracking are skipped: the object is born untracked */
    if (ok)
        obj = whole ? (PyObject *)_PyObject_GC_New(type) : type->tp_alloc(type, 0);
    for (int s = 0; s < n; s++) {
        if (obj != NULL)
            SLOT(obj, off[s]) = values[s];   /* the new reference moves into the slot */
        else
            Py_XDECREF(values[s]);
    }
    if (obj != NULL && !whole)
        PyObject_GC_UnTrack(obj);
    return obj;
}

/* Whether an instance of `type` is its header and the n slots at `off`, nothing else: a plain slotted class (no
 * __dict__, no __weakref__, no items, allocated generically, collected), whose slots tile its body exactly. */
static int whole_object(PyTypeObject *type, const Py_ssize_t *off, int n)
{
    if (type->tp_alloc != PyType_GenericAlloc || type->tp_itemsize != 0 || type->tp_dictoffset != 0
            || type->tp_weaklistoffset != 0 || !PyType_HasFeature(type, Py_TPFLAGS_HAVE_GC)
            || PyType_HasFeature(type, Py_TPFLAGS_MANAGED_DICT)
            || type->tp_basicsize != (Py_ssize_t)(sizeof(PyObject) + n * sizeof(PyObject *)))
        return 0;
    uint64_t seen = 0;
    for (int s = 0; s < n; s++) {
        Py_ssize_t i = (off[s] - (Py_ssize_t)sizeof(PyObject)) / (Py_ssize_t)sizeof(PyObject *);
        if (off[s] < (Py_ssize_t)sizeof(PyObject) || (off[s] - (Py_ssize_t)sizeof(PyObject)) % sizeof(PyObject *)
                || i >= n || seen >> i & 1)
            return 0;
        seen |= 1ull << i;
    }
    return 1;
}

/* A new flow with its group already added (the reference: Flow(...), then _add). Nothing a Flow holds can refer
 * back to it (bytes, ints, floats, str, None and the enrich stage's context tuple of those), so it can never be
 * part of a reference cycle: it is left out of the cyclic collector, which otherwise walks every flow of a full
 * table again and again under a flood of new ones. */
static PyObject *new_flow(Env *env, PyObject *key, int proto, Py_buffer *in, Py_ssize_t g, int has_tags)
{
    int64_t oport = ((const int64_t *)in[OPORT].buf)[g], rport = ((const int64_t *)in[RPORT].buf)[g];
    if (oport < 0 || oport > 0xFFFF || rport < 0 || rport > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "apply: a port out of range");
        return NULL;
    }
    int orig_is_a = ((const uint8_t *)in[ORIG_IS_A].buf)[g] != 0, o = orig_is_a ? 0 : 1;
    double first = ((const double *)in[FIRST_TS].buf)[g], last = ((const double *)in[LAST].buf)[g];
    const int64_t *macs = (const int64_t *)in[MACS].buf + 2 * g;
    const uint8_t *flags = (const uint8_t *)in[FLAGS].buf + 2 * g;
    PyObject *values[NSLOTS];
    values[S_KEY] = Py_NewRef(key);
    int64_t vlan = ((const int64_t *)in[VLAN].buf)[g];   /* 16 bits: one of the shared ints, as a port */
    values[S_VLAN] = vlan >= 0 && vlan <= 0xFFFF ? Py_NewRef(PyTuple_GET_ITEM(env->ports, vlan))
                                                 : PyLong_FromLongLong(vlan);
    values[S_PROTO] = PyLong_FromLong(proto);
    /* lazy ports: read from the key when first asked (lazy_port); oport and rport are the key's (flows.orient) */
    values[S_OPORT] = env->lazy_ports ? NULL : Py_NewRef(PyTuple_GET_ITEM(env->ports, oport));
    values[S_RPORT] = env->lazy_ports ? NULL : Py_NewRef(PyTuple_GET_ITEM(env->ports, rport));
    values[S_FIRST] = PyFloat_FromDouble(first);
    values[S_LAST] = last > first ? PyFloat_FromDouble(last) : Py_XNewRef(values[S_FIRST]);
    new_counters(values, in, g, o, has_tags);
    values[S_OMAC] = macs[o] ? shared_mac(env, macs[o]) : PyLong_FromLong(0);
    values[S_RMAC] = macs[1 - o] ? shared_mac(env, macs[1 - o]) : PyLong_FromLong(0);
    values[S_NAME] = Py_NewRef(Py_None);
    values[S_CONTEXT] = Py_NewRef(Py_None);
    int of = flags[o], rf = flags[1 - o];
    values[S_CLOSED] = PyBool_FromLong((proto == P_TCP && (of | rf) & F_RST) || (of & F_FIN && rf & F_FIN));
    values[S_ORIG_IS_A] = PyBool_FromLong(orig_is_a);
    return filled(env->flow_type, env->flow_off, values, NSLOTS,
                  env->lazy_ports ? (1u << S_OPORT | 1u << S_RPORT) : 0, env->flow_whole);
}

static PyObject *new_update(Env *env, PyObject *flow, int is_new, double ts, int64_t op, int64_t rp, int64_t ob,
                            int64_t rb)
{
    PyObject *values[NUPDATE] = {Py_NewRef(flow), PyBool_FromLong(is_new), PyFloat_FromDouble(ts),
                                 PyLong_FromLongLong(op), PyLong_FromLongLong(rp), PyLong_FromLongLong(ob),
                                 PyLong_FromLongLong(rb)};
    return filled(env->update_type, env->update_off, values, NUPDATE, 0, env->update_whole);   /* a flow and numbers: no cycle either */
}

static PyObject *take_lru(Lru *t, const uint8_t *raw, uint64_t h, PyTypeObject *type, PyObject **key);

/* Take the flow of `key` out of `table` (a new reference), or NULL with no error when it is not there. */
static PyObject *take(PyObject *table, PyObject *key, PyTypeObject *type)
{
    if (Py_IS_TYPE(table, &LruType)) {   /* an Lru among OrderedDicts */
        uint64_t h;
        PyObject *k = NULL, *flow;
        if (!key_hash(key, &h) || (flow = take_lru((Lru *)table, (const uint8_t *)PyBytes_AS_STRING(key), h, type,
                                                   &k)) == NULL)
            return NULL;
        Py_DECREF(k);
        return flow;
    }
    PyObject *flow = PyDict_GetItemWithError(table, key);   /* an OrderedDict is a dict: reading is a dict read */
    if (flow == NULL)
        return NULL;
    if (!PyObject_TypeCheck(flow, type)) {                   /* its slots are read by offset: a Flow only */
        PyErr_SetString(PyExc_TypeError, "apply: a table holds something other than a flow");
        return NULL;
    }
    Py_INCREF(flow);
    if (PyObject_DelItem(table, key) < 0) {                  /* deleting goes through OrderedDict's own order */
        Py_DECREF(flow);
        return NULL;
    }
    return flow;
}

static int end_reused(Env *env, PyObject *flow)
{
    PyObject *list = PyList_New(1);
    if (list == NULL)
        return -1;
    PyList_SET_ITEM(list, 0, Py_NewRef(flow));
    PyObject *r = PyObject_CallFunctionObjArgs(env->end, list, env->idle, NULL);
    Py_DECREF(list);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* The counters, flags, tags, MACs, last time and closing of one group, oriented by the flow's originator. */
static int add_group(Env *env, PyObject *flow, Py_buffer *in, Py_ssize_t g, int proto, int has_tags)
{
    Py_ssize_t *f = env->flow_off;
    int o = SLOT(flow, f[S_ORIG_IS_A]) == Py_True ? 0 : 1, r = 1 - o;
    const int64_t *pkts = (const int64_t *)in[PKTS].buf + 2 * g, *nbytes = (const int64_t *)in[NBYTES].buf + 2 * g;
    const int64_t *payload = (const int64_t *)in[PAYLOAD].buf + 2 * g, *macs = (const int64_t *)in[MACS].buf + 2 * g;
    const uint8_t *flags = (const uint8_t *)in[FLAGS].buf + 2 * g;
    if (add_int(flow, f[S_OPKTS], pkts[o]) || add_int(flow, f[S_RPKTS], pkts[r])
            || add_int(flow, f[S_OBYTES], nbytes[o]) || add_int(flow, f[S_RBYTES], nbytes[r])
            || add_int(flow, f[S_OPAY], payload[o]) || add_int(flow, f[S_RPAY], payload[r])
            || or_bits(flow, f[S_OFLAGS], flags[o]) || or_bits(flow, f[S_RFLAGS], flags[r]))
        return -1;
    if (has_tags) {
        const uint64_t *tags = (const uint64_t *)in[TAGS].buf + 2 * g;
        if (or_bits(flow, f[S_OTAGS], tags[o]) || or_bits(flow, f[S_RTAGS], tags[r]))
            return -1;
    }
    if (set_mac(env, flow, f[S_OMAC], macs[o]) || set_mac(env, flow, f[S_RMAC], macs[r]))
        return -1;
    double last = ((const double *)in[LAST].buf)[g], was = PyFloat_AsDouble(SLOT(flow, f[S_LAST]));
    if (was == -1.0 && PyErr_Occurred())
        return -1;
    if (last > was && put(flow, f[S_LAST], PyFloat_FromDouble(last)))
        return -1;
    long of = PyLong_AsLong(SLOT(flow, f[S_OFLAGS])), rf = PyLong_AsLong(SLOT(flow, f[S_RFLAGS]));
    if ((of == -1 || rf == -1) && PyErr_Occurred())
        return -1;
    if ((proto == P_TCP && (of | rf) & F_RST) || (of & F_FIN && rf & F_FIN))
        Py_XSETREF(SLOT(flow, f[S_CLOSED]), Py_NewRef(Py_True));
    return 0;
}

/* Take the flow of the key (raw bytes, hash h) out of an Lru (a new reference, and the key's in *key), or NULL
 * with no error when it is not there. */
static PyObject *take_lru(Lru *t, const uint8_t *raw, uint64_t h, PyTypeObject *type, PyObject **key)
{
    Py_ssize_t i = lru_find(t, (const char *)raw, KEY, h);
    if (i < 0)
        return NULL;
    if (!PyObject_TypeCheck(t->ent[ENTRY(t, i)].value, type)) {   /* slots are read by offset: a Flow only */
        PyErr_SetString(PyExc_TypeError, "apply: a table holds something other than a flow");
        return NULL;
    }
    PyObject *flow;
    Py_XDECREF(*key);
    lru_remove(t, i, key, &flow);
    return flow;
}

/* A closed TCP flow whose group opens with a SYN: the port pair was reused for a new connection, so the closed flow
 * ends and *flow is cleared for a new one to be made. A group holds a SYN only if its first packet is one (a SYN
 * after anything but a plain SYN opens a group of its own, sensor/_walk.c group), so the first direction's flags
 * tell: whatever batches the packets came in, the same SYN reopens the port pair. */
static int end_if_reused(Env *env, PyObject **flow, Py_buffer *in, Py_ssize_t g, int first_dir)
{
    if (*flow == NULL || !(((const uint8_t *)in[FLAGS].buf)[2 * g + first_dir] & F_SYN))
        return 0;
    int failed = end_reused(env, *flow);
    Py_CLEAR(*flow);
    return failed ? -1 : 0;
}

/* The group's flow made, when it has none (counted in *made), or the group added to the flow it has. */
static int make_or_add(Env *env, PyObject **flow, PyObject *key, int proto, Py_buffer *in, Py_ssize_t g,
                       int has_tags, Py_ssize_t *made)
{
    if (*flow != NULL)
        return add_group(env, *flow, in, g, proto, has_tags) < 0 ? -1 : 0;
    if ((*flow = new_flow(env, key, proto, in, g, has_tags)) == NULL)
        return -1;
    ++*made;
    return 0;
}

/* Group g's packets and bytes, the originator's first: (orig_pkts, resp_pkts, orig_bytes, resp_bytes). */
static void oriented_sums(Env *env, PyObject *flow, Py_buffer *in, Py_ssize_t g, int64_t sums[4])
{
    int o = SLOT(flow, env->flow_off[S_ORIG_IS_A]) == Py_True ? 0 : 1, r = 1 - o;
    const int64_t *pkts = (const int64_t *)in[PKTS].buf + 2 * g, *nbytes = (const int64_t *)in[NBYTES].buf + 2 * g;
    sums[0] = pkts[o];
    sums[1] = pkts[r];
    sums[2] = nbytes[o];
    sums[3] = nbytes[r];
}

/* A group's FlowUpdate, oriented to its flow's originator; apart, a new flow's update is the flow alone (what it
 * holds came from the group: flows.new_update), and a known flow's none when its updates are deferred. */
static PyObject *group_update(Env *env, PyObject *flow, Py_buffer *in, Py_ssize_t g, int is_new, int apart)
{
    if (apart && (is_new || env->pending != NULL))   /* deferred: run_groups adds the group to the pending update */
        return Py_NewRef(flow);
    int64_t sums[4];
    oriented_sums(env, flow, in, g, sums);
    return new_update(env, flow, is_new, ((const double *)in[FIRST_TS].buf)[g], sums[0], sums[1], sums[2], sums[3]);
}

/* one_group on Lru tables: the same steps (take the flow out, add the group, put it back at the recent end of its
 * table), the key hashed once for all its lookups, and a known flow's key object reused rather than made again. */
static Lru *lru_of(PyObject **tables, int proto)
{
    return (Lru *)(proto == P_TCP ? tables[0] : proto == P_UDP ? tables[2] : tables[3]);
}

static PyObject *one_group_lru(Env *env, PyObject **tables, Py_buffer *in, Py_ssize_t g, uint64_t h, int has_tags,
                               Py_ssize_t *made, int apart, int *is_new_out)
{
    const uint8_t *key_raw = (const uint8_t *)in[KEYS].buf + KEY * g;
    int proto = key_raw[2], first_dir = ((const uint8_t *)in[FIRST_DIR].buf)[g];
    Lru *table = lru_of(tables, proto);
    Lru *closed = (Lru *)tables[1];
    PyObject *key = NULL, *flow, *upd = NULL;
    /* the stamps at which the key was known absent from its table and from closed: unchanged when the flow goes
     * back, it is appended without a third probe (any Python code run meanwhile that changed a table changed its
     * stamp, and the key is then looked up again) */
    uint64_t absent_table, absent_closed = closed->stamp - 1;
    flow = take_lru(table, key_raw, h, env->flow_type, &key);
    absent_table = table->stamp;
    if (flow == NULL && !PyErr_Occurred() && proto == P_TCP) {
        flow = take_lru(closed, key_raw, h, env->flow_type, &key);
        absent_closed = closed->stamp;
        if (end_if_reused(env, &flow, in, g, first_dir) < 0)
            goto done;
    }
    if (PyErr_Occurred())
        goto done;
    if (key == NULL && (key = PyBytes_FromStringAndSize((const char *)key_raw, KEY)) == NULL)
        goto done;
    int is_new = *is_new_out = flow == NULL;
    if (make_or_add(env, &flow, key, proto, in, g, has_tags, made) < 0)
        goto done;
    Lru *into = SLOT(flow, env->flow_off[S_CLOSED]) == Py_True ? closed : table;
    if (into->stamp == (into == table ? absent_table : absent_closed)) {
        if (lru_reserve(into) < 0)
            goto done;
        lru_append(into, Py_NewRef(key), Py_NewRef(flow), h);
    } else if (lru_set(into, key, flow, h) < 0) {
        goto done;
    }
    upd = group_update(env, flow, in, g, is_new, apart);
done:
    Py_XDECREF(key);
    Py_XDECREF(flow);
    return upd;
}

/* One group: find or make its flow, add the group to it, put it back at the recent end; its FlowUpdate. */
static PyObject *one_group(Env *env, PyObject **tables, Py_buffer *in, Py_ssize_t g, int has_tags, Py_ssize_t *made,
                           int apart, int *is_new_out)
{
    const uint8_t *key_raw = (const uint8_t *)in[KEYS].buf + KEY * g;
    int proto = key_raw[2], first_dir = ((const uint8_t *)in[FIRST_DIR].buf)[g];
    PyObject *table = proto == P_TCP ? tables[0] : proto == P_UDP ? tables[2] : tables[3];
    PyObject *key = PyBytes_FromStringAndSize((const char *)key_raw, KEY), *flow, *upd = NULL;
    if (key == NULL)
        return NULL;
    flow = take(table, key, env->flow_type);
    if (flow == NULL && !PyErr_Occurred() && proto == P_TCP) {
        flow = take(tables[1], key, env->flow_type);
        if (end_if_reused(env, &flow, in, g, first_dir) < 0)
            goto done;
    }
    if (PyErr_Occurred())
        goto done;
    int is_new = *is_new_out = flow == NULL;
    if (make_or_add(env, &flow, key, proto, in, g, has_tags, made) < 0)
        goto done;
    PyObject *into = SLOT(flow, env->flow_off[S_CLOSED]) == Py_True ? tables[1] : table;
    if (PyObject_SetItem(into, key, flow) < 0)
        goto done;
    upd = group_update(env, flow, in, g, is_new, apart);
done:
    Py_DECREF(key);
    Py_XDECREF(flow);
    return upd;
}

static int check(Py_buffer *in, Py_ssize_t *groups, int *has_tags)
{
    Py_ssize_t u = in[FIRST_DIR].len;
    static const int width[NBUF] = {KEY, 1, 1, 8, 8, 8, 8, 16, 16, 16, 2, 16, 16, 8};
    *has_tags = in[TAGS].len != 0;
    for (int j = 0; j < NBUF; j++) {
        if (j == TAGS && !*has_tags)
            continue;
        if (in[j].len != u * width[j]) {
            PyErr_SetString(PyExc_ValueError, "apply: columns of different lengths");
            return -1;
        }
    }
    *groups = u;
    return 0;
}

/* ---- what bind reads off the two types, kept while neither changes (sparse helper, issue 16) ----------------------
 * Reading the 37 slots' offsets from the types' dicts was ~0.6 µs of every apply, and a one-second window of camera
 * control traffic applies a group or two (97,000 windows for 127 real sites one after another). The answer is kept
 * with each type's version tag, which CPython assigns when it caches a lookup in the type and clears whenever the
 * type's dict changes (PyType_Modified: a slot replaced, lazy_port set): a type without a valid tag, or with
 * another, is read again. The kept types are strong references, so a type freed and another made at its address
 * cannot match (a new type never reuses a tag either). */
typedef struct {
    PyTypeObject *flow_type, *update_type;
    unsigned int flow_tag, update_tag;
    Py_ssize_t flow_off[NSLOTS], update_off[NUPDATE];
    int lazy_ports, flow_whole, update_whole;
} Bound;
static Bound bound;

static int tagged(PyTypeObject *type)
{
    return PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG) && type->tp_version_tag != 0;
}

static int bound_holds(PyTypeObject *flow_type, PyTypeObject *update_type)
{
    return bound.flow_type == flow_type && bound.update_type == update_type && tagged(flow_type)
           && tagged(update_type) && flow_type->tp_version_tag == bound.flow_tag
           && update_type->tp_version_tag == bound.update_tag;
}

static void bound_keep(const Env *env)
{
    if (!tagged(env->flow_type) || !tagged(env->update_type))
        return;
    PyTypeObject *old_flow = bound.flow_type, *old_update = bound.update_type;
    bound.flow_type = (PyTypeObject *)Py_NewRef(env->flow_type);
    bound.update_type = (PyTypeObject *)Py_NewRef(env->update_type);
    bound.flow_tag = env->flow_type->tp_version_tag;
    bound.update_tag = env->update_type->tp_version_tag;
    memcpy(bound.flow_off, env->flow_off, sizeof bound.flow_off);
    memcpy(bound.update_off, env->update_off, sizeof bound.update_off);
    bound.lazy_ports = env->lazy_ports;
    bound.flow_whole = env->flow_whole;
    bound.update_whole = env->update_whole;
    Py_XDECREF(old_flow);
    Py_XDECREF(old_update);
}
/* ---- end of what bind keeps ---- */

static int bind(Env *env, PyObject *types, PyObject *end)
{
    /* the tuple's items read directly, not through PyArg_ParseTuple: with the tables' tuple that was ~1,200
     * instructions of every window's apply */
    if (PyTuple_GET_SIZE(types) != 5 || !PyType_Check(PyTuple_GET_ITEM(types, 0))
            || !PyType_Check(PyTuple_GET_ITEM(types, 1)) || !PyTuple_Check(PyTuple_GET_ITEM(types, 2))
            || !PyDict_Check(PyTuple_GET_ITEM(types, 3))) {
        PyErr_SetString(PyExc_TypeError, "apply: types must be (flow type, update type, ports tuple, MACs dict, "
                                         "shared_mac)");
        return -1;
    }
    PyObject *flow_type = PyTuple_GET_ITEM(types, 0), *update_type = PyTuple_GET_ITEM(types, 1);
    env->ports = PyTuple_GET_ITEM(types, 2);
    env->macs = PyTuple_GET_ITEM(types, 3);
    env->shared_mac = PyTuple_GET_ITEM(types, 4);
    if (PyTuple_GET_SIZE(env->ports) != 0x10000) {
        PyErr_SetString(PyExc_ValueError, "apply: ports must be the 65,536 shared port ints");
        return -1;
    }
    env->flow_type = (PyTypeObject *)flow_type;
    env->update_type = (PyTypeObject *)update_type;
    env->end = end;
    /* made once and kept: interning the name again cost ~800 instructions of every window's apply */
    static PyObject *idle;
    if (idle == NULL && (idle = PyUnicode_InternFromString("idle")) == NULL)
        return -1;
    env->idle = Py_NewRef(idle);
    env->memo_int[0] = env->memo_int[1] = NULL;
    env->memo_next = 0;
    if (bound_holds(env->flow_type, env->update_type)) {
        memcpy(env->flow_off, bound.flow_off, sizeof bound.flow_off);
        memcpy(env->update_off, bound.update_off, sizeof bound.update_off);
        env->lazy_ports = bound.lazy_ports;
        env->flow_whole = bound.flow_whole;
        env->update_whole = bound.update_whole;
        return 0;
    }
    if (offsets_interned(env->flow_type, FLOW_SLOTS, flow_names, NSLOTS, env->flow_off) < 0
            || offsets_interned(env->update_type, UPDATE_SLOTS, update_names, NUPDATE, env->update_off) < 0) {
        Py_CLEAR(env->idle);
        return -1;
    }
    /* both ports lazy, or neither: a flow whose port is neither set nor readable from its key must not be made */
    PyObject *o = PyDict_GetItemWithError(env->flow_type->tp_dict, flow_names[S_OPORT]);
    PyObject *r = PyDict_GetItemWithError(env->flow_type->tp_dict, flow_names[S_RPORT]);
    if (PyErr_Occurred()) {
        Py_CLEAR(env->idle);
        return -1;
    }
    env->lazy_ports = o != NULL && Py_IS_TYPE(o, &LazyPortType) && r != NULL && Py_IS_TYPE(r, &LazyPortType);
    env->flow_whole = whole_object(env->flow_type, env->flow_off, NSLOTS);
    env->update_whole = whole_object(env->update_type, env->update_off, NUPDATE);
    bound_keep(env);
    return 0;
}

/* Each group's update into `updates`, or with `apart` a new flow's flow into `fresh` instead. */
/* Batch-wise on Lru tables: every group's key hashed first, and before each block of TOUCH groups is applied, the
 * index slot where each of its probes starts is read, in a loop of nothing else. On a flood of new keys that probe
 * was a cache miss a group (the index of a 200,000-flow table is 4 MiB, and the flood's new objects stream through
 * the caches between two probes): a prefetch eight groups ahead still left it ~8% of the flow stage (perf; the
 * load after it took 91% of lru_find), while independent loads side by side overlap their misses. The flood's
 * table step alone: 0.78 -> 0.66 µs a flow (interleaved runs). Reads only: a block whose groups grow the index
 * merely finds fewer slots warm. */
#define TOUCH 64
static volatile uint64_t touch_sink;   /* the loads' sum is kept, so that they are made */

/* hashes: group lo's hash first */
static void touch_probes(PyObject **tables, Py_buffer *in, Py_ssize_t lo, Py_ssize_t hi, const uint64_t *hashes)
{
    uint64_t acc = 0;
    for (Py_ssize_t g = lo; g < hi; g++) {
        Lru *t = lru_of(tables, ((const uint8_t *)in[KEYS].buf)[KEY * g + 2]);
        if (t->index != NULL)
            acc += t->index[hashes[g - lo] & t->mask];
    }
    touch_sink = acc;
}

/* A known flow's group into the second's pending updates (flows.defer_updates, its reference): nothing for a flow
 * still waiting as new (it holds these packets already), a new update for a flow without one (group_update's), else
 * the group's packets and bytes added to the update it has. */
static int defer_group(Env *env, PyObject *flow, Py_buffer *in, Py_ssize_t g)
{
    int waiting = PyDict_Contains(env->waiting, flow);
    if (waiting != 0)
        return waiting < 0 ? -1 : 0;
    PyObject *acc = PyDict_GetItemWithError(env->pending, flow);   /* borrowed */
    if (acc == NULL) {
        if (PyErr_Occurred())
            return -1;
        PyObject *upd = group_update(env, flow, in, g, 0, 0);
        if (upd == NULL)
            return -1;
        int failed = PyDict_SetItem(env->pending, flow, upd);
        Py_DECREF(upd);
        return failed;
    }
    if (!PyObject_TypeCheck(acc, env->update_type)) {   /* its slots are written by offset: a FlowUpdate only */
        PyErr_SetString(PyExc_TypeError, "apply: a pending update that is not a FlowUpdate");
        return -1;
    }
    int64_t sums[4];   /* the group's, oriented as group_update orients them */
    oriented_sums(env, flow, in, g, sums);
    Py_ssize_t *u = env->update_off;
    return add_int(acc, u[3], sums[0]) || add_int(acc, u[4], sums[1]) || add_int(acc, u[5], sums[2])
           || add_int(acc, u[6], sums[3]) ? -1 : 0;
}

/* Groups lo to hi (one window's of a slice grouped at once: flows.Windows). */
static int run_groups(Env *env, PyObject **tables, Py_buffer *in, Py_ssize_t lo, Py_ssize_t hi, int has_tags,
                      Py_ssize_t *made, PyObject *updates, PyObject *fresh)
{
    uint64_t *hashes = NULL;   /* group g's at g - lo */
    if (env->lru && hi > lo) {
        if ((hashes = PyMem_Malloc((size_t)(hi - lo) * sizeof(uint64_t))) == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t g = lo; g < hi; g++)
            hashes[g - lo] = siphash13((const uint8_t *)in[KEYS].buf + KEY * g, KEY);
    }
    /* Apart, a new flow stands for all that the batch added to it (flows.new_update), so a later group that adds to
     * it gives no update. Only a key reopened by a SYN (sensor/_walk.c, group) is more than one group, and a
     * reopening group opens with that SYN: the flows made so far are gathered, once, when a group with a SYN adds
     * to a flow, and those made after it are added. */
    PyObject *made_here = NULL;
    int failed = 0;
    for (Py_ssize_t g = lo; g < hi && !failed; g++) {
        int is_new = 0;
        if (hashes != NULL && (g - lo) % TOUCH == 0)
            touch_probes(tables, in, g, hi < g + TOUCH ? hi : g + TOUCH, hashes + (g - lo));
        PyObject *out = hashes != NULL
                            ? one_group_lru(env, tables, in, g, hashes[g - lo], has_tags, made, fresh != NULL, &is_new)
                            : one_group(env, tables, in, g, has_tags, made, fresh != NULL, &is_new);
        if (out == NULL) {
            failed = 1;
            break;
        }
        int made_before = 0;
        if (fresh != NULL && is_new && made_here != NULL) {
            failed = PySet_Add(made_here, out) < 0;
        } else if (fresh != NULL && !is_new && PyList_GET_SIZE(fresh) > 0) {
            const uint8_t *flags = (const uint8_t *)in[FLAGS].buf + 2 * g;
            if ((flags[0] | flags[1]) & F_SYN) {
                if (made_here == NULL && (made_here = PySet_New(fresh)) == NULL)
                    failed = 1;
                else if ((made_before = PySet_Contains(made_here, env->pending != NULL ? out
                                                                  : SLOT(out, env->update_off[0]))) < 0)
                    failed = 1;
            }
        }
        if (!failed && !made_before && !is_new && env->pending != NULL)
            failed = defer_group(env, out, in, g) < 0;
        else if (!failed && !made_before)
            failed = PyList_Append(fresh != NULL && is_new ? fresh : updates, out) < 0;
        Py_DECREF(out);
    }
    Py_XDECREF(made_here);
    PyMem_Free(hashes);
    return failed ? -1 : 0;
}

/* (fresh, updates, made), or without fresh (updates, made): not Py_BuildValue, whose format walk is paid once a
 * window */
static PyObject *answer(PyObject *fresh, PyObject *updates, Py_ssize_t made)
{
    PyObject *count = PyLong_FromSsize_t(made);
    if (count == NULL)
        return NULL;
    PyObject *out = fresh != NULL ? PyTuple_Pack(3, fresh, updates, count) : PyTuple_Pack(2, updates, count);
    Py_DECREF(count);
    return out;
}

static PyObject *apply(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *tables_obj, *end, *types, *tables[4];
    Py_buffer in[NBUF];
    int apart = 0;
    Py_ssize_t lo = 0, hi = -1;   /* the groups applied: all of them, or [lo, hi) */
    PyObject *pending = NULL, *waiting = NULL;
    if (nargs != 3 + NBUF && nargs != 4 + NBUF && nargs != 6 + NBUF && nargs != 8 + NBUF) {
        PyErr_Format(PyExc_TypeError, "apply: %d, %d, %d or %d arguments, not %zd", 3 + NBUF, 4 + NBUF, 6 + NBUF,
                     8 + NBUF, nargs);
        return NULL;
    }
    if (nargs == 8 + NBUF) {
        pending = args[6 + NBUF];
        waiting = args[7 + NBUF];
        if (!PyDict_CheckExact(pending) || !PyDict_Check(waiting)) {
            PyErr_SetString(PyExc_TypeError, "apply: the pending updates and the waiting flows must be dicts");
            return NULL;
        }
    }
    if (nargs >= 6 + NBUF) {
        lo = PyLong_AsSsize_t(args[4 + NBUF]);
        hi = PyLong_AsSsize_t(args[5 + NBUF]);
        if ((lo == -1 || hi == -1) && PyErr_Occurred())
            return NULL;
        if (lo < 0 || hi < lo) {
            PyErr_SetString(PyExc_ValueError, "apply: groups out of range");
            return NULL;
        }
    }
    tables_obj = args[0];
    end = args[1];
    types = args[2];
    if (!PyTuple_Check(tables_obj) || !PyTuple_Check(types)) {
        PyErr_SetString(PyExc_TypeError, "apply: the tables and the types must be tuples");
        return NULL;
    }
    if (nargs > 3 + NBUF && (apart = PyObject_IsTrue(args[3 + NBUF])) < 0)
        return NULL;
    if (pending != NULL && !apart) {
        PyErr_SetString(PyExc_ValueError, "apply: updates are deferred only apart");
        return NULL;
    }
    if (buffers(args + 3, NBUF, in) < 0)
        return NULL;
    Env env;
    PyObject *out = NULL, *updates = NULL, *fresh = NULL;
    Py_ssize_t u = 0, made = 0;
    int has_tags = 0;
    if (PyTuple_GET_SIZE(tables_obj) != 4) {
        PyErr_SetString(PyExc_TypeError, "apply: four tables");
        goto release;
    }
    for (int i = 0; i < 4; i++)
        tables[i] = PyTuple_GET_ITEM(tables_obj, i);
    int lrus = 0;
    for (int i = 0; i < 4; i++) {
        lrus += Py_IS_TYPE(tables[i], &LruType);
        if (!PyDict_Check(tables[i]) && !Py_IS_TYPE(tables[i], &LruType)) {
            PyErr_SetString(PyExc_TypeError, "apply: the tables must be OrderedDicts or Lrus");
            goto release;
        }
    }
    if (check(in, &u, &has_tags) < 0)
        goto release;
    if (hi > u) {
        PyErr_SetString(PyExc_ValueError, "apply: groups out of range");
        goto release;
    }
    if (bind(&env, types, end) < 0)
        goto release;
    env.pending = pending;
    env.waiting = waiting;
    env.lru = lrus == 4;   /* a mix goes through the mapping protocol, as OrderedDicts */
    updates = PyList_New(0);
    fresh = apart ? PyList_New(0) : NULL;
    if (updates != NULL && (fresh != NULL || !apart)
            && run_groups(&env, tables, in, lo, hi < 0 ? u : hi, has_tags, &made, updates, fresh) == 0)
        out = answer(fresh, updates, made);   /* fresh: NULL unless apart */
    Py_XDECREF(updates);
    Py_XDECREF(fresh);
    Py_DECREF(env.idle);
    Py_XDECREF(env.memo_int[0]);
    Py_XDECREF(env.memo_int[1]);
release:
    for (int j = 0; j < NBUF; j++)
        PyBuffer_Release(&in[j]);
    return out;
}

/* ---- eviction past max_flows -------------------------------------------------------------------------------------
 * evict(tables, excess, flow_type) -> [flows]: FlowTable._evict_python's loop. tables: the four OrderedDicts in
 * FlowTable._timeouts order, each least recently active first; `excess` times, the head of the table whose head is
 * least recently active (`last`; the first table on a tie) is taken out, and the flows taken are returned in that
 * order. */

/* The head of an OrderedDict (a new reference to its key) and its flow's `last`; NULL without an error if empty. */
static PyObject *head(PyObject *table, PyTypeObject *flow_type, Py_ssize_t last_off, double *last)
{
    PyObject *it = PyObject_GetIter(table), *key;   /* OrderedDict's own order, not the dict's */
    if (it == NULL)
        return NULL;
    key = PyIter_Next(it);
    Py_DECREF(it);
    if (key == NULL)
        return NULL;
    PyObject *flow = PyDict_GetItemWithError(table, key);   /* borrowed */
    if (flow == NULL || !PyObject_TypeCheck(flow, flow_type)) {   /* its slots are read by offset: a Flow only */
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "evict: a table holds something other than a flow");
        Py_DECREF(key);
        return NULL;
    }
    if (SLOT(flow, last_off) == NULL) {
        PyErr_SetString(PyExc_AttributeError, "evict: a flow without its last time");
        Py_DECREF(key);
        return NULL;
    }
    *last = PyFloat_AsDouble(SLOT(flow, last_off));
    if (*last == -1.0 && PyErr_Occurred()) {
        Py_CLEAR(key);
    }
    return key;
}

static int evict_loop(PyObject **tables, Py_ssize_t excess, PyTypeObject *flow_type, Py_ssize_t last_off,
                      PyObject *out)
{
    PyObject *keys[4] = {NULL, NULL, NULL, NULL};
    double heads[4] = {0, 0, 0, 0};
    int failed = 0;
    for (int i = 0; i < 4 && !failed; i++)
        failed = (keys[i] = head(tables[i], flow_type, last_off, &heads[i])) == NULL && PyErr_Occurred();
    for (; excess > 0 && !failed; excess--) {
        int best = -1;
        for (int i = 0; i < 4; i++)
            if (keys[i] != NULL && (best < 0 || heads[i] < heads[best]))
                best = i;
        if (best < 0)
            break;
        PyObject *flow = PyDict_GetItemWithError(tables[best], keys[best]);
        failed = flow == NULL || PyList_Append(out, flow) < 0 || PyObject_DelItem(tables[best], keys[best]) < 0;
        if (flow == NULL && !PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "evict: a table changed while it was read");
        Py_CLEAR(keys[best]);
        if (!failed)
            failed = (keys[best] = head(tables[best], flow_type, last_off, &heads[best])) == NULL
                     && PyErr_Occurred();
    }
    for (int i = 0; i < 4; i++)
        Py_XDECREF(keys[i]);
    return failed ? -1 : 0;
}

/* An Lru's head flow's `last`: 1, 0 if the table is empty, -1 with an error. */
static int lru_head_last(Lru *t, PyTypeObject *flow_type, Py_ssize_t last_off, double *last)
{
    if (t->n == 0)
        return 0;
    PyObject *flow = t->ent[t->head].value, *v;
    if (!PyObject_TypeCheck(flow, flow_type)) {   /* its slots are read by offset: a Flow only */
        PyErr_SetString(PyExc_TypeError, "evict: a table holds something other than a flow");
        return -1;
    }
    if ((v = SLOT(flow, last_off)) == NULL) {
        PyErr_SetString(PyExc_AttributeError, "evict: a flow without its last time");
        return -1;
    }
    *last = PyFloat_AsDouble(v);
    return *last == -1.0 && PyErr_Occurred() ? -1 : 1;
}

/* evict_loop on four Lrus: heads read from the entries, taken out without a lookup by key. */
static int evict_lru(Lru **t, Py_ssize_t excess, PyTypeObject *flow_type, Py_ssize_t last_off, PyObject *out)
{
    double heads[4] = {0, 0, 0, 0};
    int has[4];
    for (int i = 0; i < 4; i++)
        if ((has[i] = lru_head_last(t[i], flow_type, last_off, &heads[i])) < 0)
            return -1;
    for (; excess > 0; excess--) {
        int best = -1;
        for (int i = 0; i < 4; i++)
            if (has[i] > 0 && (best < 0 || heads[i] < heads[best]))
                best = i;
        if (best < 0)
            break;
        Lru *b = t[best];
        if (b->n == 0) {   /* emptied by code run while reading a head's time */
            PyErr_SetString(PyExc_RuntimeError, "evict: a table changed while it was read");
            return -1;
        }
        PyObject *k, *flow;
        lru_remove(b, lru_slot_of(b, b->head), &k, &flow);
        int failed = PyList_Append(out, flow);
        Py_DECREF(k);
        Py_DECREF(flow);
        if (failed || (has[best] = lru_head_last(b, flow_type, last_off, &heads[best])) < 0)
            return -1;
    }
    return 0;
}

static PyObject *evict(PyObject *self, PyObject *args)
{
    PyObject *tables[4], *flow_type;
    Py_ssize_t excess, last_off;
    static const char *last_name[] = {"last"};
    if (!PyArg_ParseTuple(args, "(OOOO)nO!", &tables[0], &tables[1], &tables[2], &tables[3], &excess, &PyType_Type,
                          &flow_type))
        return NULL;
    int lrus = 0, dicts = 0;
    for (int i = 0; i < 4; i++) {
        lrus += Py_IS_TYPE(tables[i], &LruType);
        dicts += PyDict_Check(tables[i]);
    }
    if (lrus != 4 && dicts != 4) {
        PyErr_SetString(PyExc_TypeError, "evict: the tables must be four OrderedDicts or four Lrus");
        return NULL;
    }
    if (offsets_interned((PyTypeObject *)flow_type, last_name, evict_names, 1, &last_off) < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (out != NULL && (lrus == 4 ? evict_lru((Lru **)tables, excess, (PyTypeObject *)flow_type, last_off, out)
                                  : evict_loop(tables, excess, (PyTypeObject *)flow_type, last_off, out)) < 0)
        Py_CLEAR(out);
    return out;
}

/* ---- expire (window helper, issue 16) -----------------------------------------------------------------------------
 * expire(spec, now) -> list of flows. spec: (flow type, table, timeout, table, timeout, ...), the tables Lrus in the
 * order FlowTable._timeouts gives them. From each table in turn its head is taken out while `now` is more than the
 * table's timeout past the head's `last` (not `now - last <= timeout`, so a NaN expires it): FlowTable.expire's loop,
 * which stays the reference for OrderedDict tables. Asked once a one-second window: on sequential camera control
 * traffic (~10 packets a window, 97,000 windows for 1 M packets) the Python loop's four heads were ~1.2 µs a window.
 * A `last` that is neither a float nor an int raises TypeError (no Python code runs while a table is read). */
static PyObject *expire(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    static const char *last_name[] = {"last"};
    if (nargs != 2 || !PyTuple_Check(args[0]) || PyTuple_GET_SIZE(args[0]) % 2 != 1
            || !PyType_Check(PyTuple_GET_ITEM(args[0], 0))) {
        PyErr_SetString(PyExc_TypeError, "expire: (flow type, table, timeout, ...) and a time");
        return NULL;
    }
    double now = PyFloat_AsDouble(args[1]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    PyObject *spec = args[0];
    PyTypeObject *flow_type = (PyTypeObject *)PyTuple_GET_ITEM(spec, 0);
    Py_ssize_t last_off, pairs = PyTuple_GET_SIZE(spec) / 2;
    if (offsets_interned(flow_type, last_name, evict_names, 1, &last_off) < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t p = 0; p < pairs; p++) {
        PyObject *table = PyTuple_GET_ITEM(spec, 1 + 2 * p);
        double timeout = PyFloat_AsDouble(PyTuple_GET_ITEM(spec, 2 + 2 * p));
        if (timeout == -1.0 && PyErr_Occurred())
            goto fail;
        if (!Py_IS_TYPE(table, &LruType)) {
            PyErr_SetString(PyExc_TypeError, "expire: the tables must be Lrus");
            goto fail;
        }
        Lru *t = (Lru *)table;
        while (t->n > 0) {
            PyObject *flow = t->ent[t->head].value, *v;
            if (!PyObject_TypeCheck(flow, flow_type)) {   /* its slots are read by offset: a Flow only */
                PyErr_SetString(PyExc_TypeError, "expire: a table holds something other than a flow");
                goto fail;
            }
            if ((v = SLOT(flow, last_off)) == NULL) {
                PyErr_SetString(PyExc_AttributeError, "expire: a flow without its last time");
                goto fail;
            }
            double last;
            if (PyFloat_Check(v))
                last = PyFloat_AS_DOUBLE(v);
            else if (PyLong_Check(v) && !((last = PyLong_AsDouble(v)) == -1.0 && PyErr_Occurred()))
                ;
            else {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_TypeError, "expire: a flow's last time is not a number");
                goto fail;
            }
            if (now - last <= timeout)
                break;
            PyObject *k, *gone;
            lru_remove(t, lru_slot_of(t, t->head), &k, &gone);
            int failed = PyList_Append(out, gone);
            Py_DECREF(k);
            Py_DECREF(gone);
            if (failed)
                goto fail;
        }
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}
/* ---- end of expire ---- */

/* ---- orient (window helper, issue 16) -----------------------------------------------------------------------------
 * orient(proto, fragment, sport, dport, tcp_flags, vlan, ts, rows, first, first_dir)
 *     -> (orig_is_a, orig_port, resp_port, vlan, first_ts) as bytes (uint8, int64, int64, int64, float64 per group)
 * flows.orient's rule (the reference, with its numpy and scalar paths), for the groups of _walk.group: group g's
 * first packet is row rows[first[g]] of the batch's columns (proto, fragment, tcp_flags uint8; sport, dport int64;
 * vlan uint16; ts float64), sent in direction first_dir[g]. A second of camera control traffic is a few groups,
 * where each numpy step costs its fixed microsecond: one call instead of a dozen. Out-of-range rows raise. */
#define P_ICMP 1
#define P_ICMPV6 58
#define F_ACK 0x10

static int icmp_reply(int64_t type)
{
    return type == 0 || type == 14 || type == 16 || type == 18 || type == 129;
}

static PyObject *orient(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    enum { O_PROTO, O_FRAG, O_SPORT, O_DPORT, O_FLAGS, O_VLAN, O_TS, O_ROWS, O_FIRST, O_DIR, O_NBUF };
    static const int width[O_NBUF] = {1, 1, 8, 8, 1, 2, 8, 8, 8, 1};
    Py_buffer in[O_NBUF];
    PyObject *out[5] = {NULL}, *result = NULL;
    if (nargs != O_NBUF) {
        PyErr_Format(PyExc_TypeError, "orient: %d arguments, not %zd", O_NBUF, nargs);
        return NULL;
    }
    if (buffers(args, O_NBUF, in) < 0)
        return NULL;
    Py_ssize_t n = in[O_PROTO].len, m = in[O_ROWS].len / 8, u = in[O_DIR].len;
    for (int j = 0; j < O_NBUF; j++) {
        Py_ssize_t want = j == O_ROWS ? 8 * m : j == O_FIRST || j == O_DIR ? width[j] * u : width[j] * n;
        if (in[j].len != want) {
            PyErr_SetString(PyExc_ValueError, "orient: columns of different lengths");
            goto release;
        }
    }
    out[0] = PyBytes_FromStringAndSize(NULL, u);
    out[1] = PyBytes_FromStringAndSize(NULL, 8 * u);
    out[2] = PyBytes_FromStringAndSize(NULL, 8 * u);
    out[3] = PyBytes_FromStringAndSize(NULL, 8 * u);
    out[4] = PyBytes_FromStringAndSize(NULL, 8 * u);
    for (int j = 0; j < 5; j++)
        if (out[j] == NULL)
            goto release;
    const uint8_t *proto = in[O_PROTO].buf, *frag = in[O_FRAG].buf, *tflags = in[O_FLAGS].buf, *dir = in[O_DIR].buf;
    const int64_t *sport = in[O_SPORT].buf, *dport = in[O_DPORT].buf, *rows = in[O_ROWS].buf;
    const int64_t *first = in[O_FIRST].buf;
    const uint16_t *vlan = in[O_VLAN].buf;
    const double *ts = in[O_TS].buf;
    uint8_t *is_a = (uint8_t *)PyBytes_AS_STRING(out[0]);
    int64_t *oport = (int64_t *)PyBytes_AS_STRING(out[1]), *rport = (int64_t *)PyBytes_AS_STRING(out[2]);
    int64_t *ovlan = (int64_t *)PyBytes_AS_STRING(out[3]);
    double *first_ts = (double *)PyBytes_AS_STRING(out[4]);
    for (Py_ssize_t g = 0; g < u; g++) {
        if (first[g] < 0 || first[g] >= m || rows[first[g]] < 0 || rows[first[g]] >= n) {
            PyErr_SetString(PyExc_ValueError, "orient: a first row out of range");
            goto release;
        }
        Py_ssize_t r = rows[first[g]];
        int p = proto[r], f = tflags[r], swap = 0, portless = frag[r] != 0;
        int64_t sp = sport[r], dp = dport[r];
        int low_to_high = sp < 1024 && dp >= 1024;
        if (p == P_TCP)
            swap = (f & (F_SYN | F_ACK)) == (F_SYN | F_ACK) || (!(f & F_SYN) && low_to_high);
        else if (p == P_UDP)
            swap = low_to_high;
        else if (p == P_ICMP || p == P_ICMPV6) {
            swap = icmp_reply(sp);
            portless = 1;
        }
        if (portless)
            sp = dp = 0;
        is_a[g] = (dir[g] == 0) != swap;
        oport[g] = swap ? dp : sp;
        rport[g] = swap ? sp : dp;
        ovlan[g] = vlan[r];
        first_ts[g] = ts[r];
    }
    result = PyTuple_Pack(5, out[0], out[1], out[2], out[3], out[4]);
release:
    for (int j = 0; j < 5; j++)
        Py_XDECREF(out[j]);
    for (int j = 0; j < O_NBUF; j++)
        PyBuffer_Release(&in[j]);
    return result;
}
/* ---- end of orient (window helper) ---- */

/* ---- a window's new flows as columns (newflows helper, issue 16) --------------------------------------------------
 * columns(flows, flow_type) -> (orig_raw, resp_raw, orig_sent, resp_sent, orig_mac, resp_mac, first) as bytes (16
 * per flow x2, the originator's and responder's addresses from the key; uint8 x2; int64 x2; float64): what
 * enrich.new_flows._Window reads of each flow, in one pass. Its reference,
 * new_flows.columns_python, reads one attribute of every flow per list: on a flood the window's flows were made
 * over the last second and are not in cache, so each of its seven passes was a cache miss a flow (~0.45 µs of a new
 * flow's ~1.4, measured). None when a flow is not what the table makes (not a flow_type, a key other than 40
 * bytes, a slot empty, a counter or MAC not an int64, a time not a float, orig_is_a not a bool): the reference
 * then reads it, and decides (it raises, or gives up on the window, as it did before). */
#define COLUMNS_AHEAD 8

static int column_int64(PyObject *v, int64_t *out)
{
    int overflow = 0;
    if (v == NULL || !PyLong_CheckExact(v))
        return 0;
    *out = PyLong_AsLongLongAndOverflow(v, &overflow);
    return !overflow && !(*out == -1 && PyErr_Occurred());
}

static PyObject *columns(PyObject *self, PyObject *args)
{
    enum { C_ORIG, C_RESP, C_OSENT, C_RSENT, C_OMAC, C_RMAC, C_FIRST, NCOL };
    static const int width[NCOL] = {16, 16, 1, 1, 8, 8, 8};
    PyObject *flows, *flow_type, *out[NCOL] = {NULL}, *result = NULL;
    Py_ssize_t off[NSLOTS];
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &flows, &PyType_Type, &flow_type)
            || offsets_interned((PyTypeObject *)flow_type, FLOW_SLOTS, flow_names, NSLOTS, off) < 0)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(flows);
    for (int j = 0; j < NCOL; j++)
        if ((out[j] = PyBytes_FromStringAndSize(NULL, width[j] * n)) == NULL)
            goto done;
    uint8_t *orig = (uint8_t *)PyBytes_AS_STRING(out[C_ORIG]), *resp = (uint8_t *)PyBytes_AS_STRING(out[C_RESP]);
    uint8_t *osent = (uint8_t *)PyBytes_AS_STRING(out[C_OSENT]), *rsent = (uint8_t *)PyBytes_AS_STRING(out[C_RSENT]);
    int64_t *omac = (int64_t *)PyBytes_AS_STRING(out[C_OMAC]), *rmac = (int64_t *)PyBytes_AS_STRING(out[C_RMAC]);
    double *first = (double *)PyBytes_AS_STRING(out[C_FIRST]);
    PyObject **items = ((PyListObject *)flows)->ob_item;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* the flows ahead, and the keys of those nearer, are fetched while this one is read */
        if (i + 2 * COLUMNS_AHEAD < n)
            __builtin_prefetch(items[i + 2 * COLUMNS_AHEAD]);
        if (i + COLUMNS_AHEAD < n && PyObject_TypeCheck(items[i + COLUMNS_AHEAD], (PyTypeObject *)flow_type)
                && SLOT(items[i + COLUMNS_AHEAD], off[S_KEY]) != NULL)
            __builtin_prefetch(SLOT(items[i + COLUMNS_AHEAD], off[S_KEY]));
        PyObject *f = items[i];
        if (!PyObject_TypeCheck(f, (PyTypeObject *)flow_type))
            goto refused;
        PyObject *key = SLOT(f, off[S_KEY]), *a = SLOT(f, off[S_ORIG_IS_A]), *t = SLOT(f, off[S_FIRST]);
        int64_t op, rp;
        if (key == NULL || !PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) != KEY || (a != Py_True && a != Py_False)
                || t == NULL || !PyFloat_CheckExact(t) || !column_int64(SLOT(f, off[S_OPKTS]), &op)
                || !column_int64(SLOT(f, off[S_RPKTS]), &rp) || !column_int64(SLOT(f, off[S_OMAC]), &omac[i])
                || !column_int64(SLOT(f, off[S_RMAC]), &rmac[i]))
            goto refused;
        const char *k = PyBytes_AS_STRING(key);   /* A at 3:19, B at 21:37 */
        memcpy(orig + 16 * i, k + (a == Py_True ? 3 : 21), 16);
        memcpy(resp + 16 * i, k + (a == Py_True ? 21 : 3), 16);
        osent[i] = op > 0;
        rsent[i] = rp > 0;
        first[i] = PyFloat_AS_DOUBLE(t);
    }
    result = PyTuple_New(NCOL);
    for (int j = 0; result != NULL && j < NCOL; j++)
        PyTuple_SET_ITEM(result, j, Py_NewRef(out[j]));
    goto done;
refused:
    PyErr_Clear();   /* an int too big for int64 (column_int64) is only a refusal */
    result = Py_NewRef(Py_None);
done:
    for (int j = 0; j < NCOL; j++)
        Py_XDECREF(out[j]);
    return result;
}
/* ---- end of a window's new flows as columns ---- */

/* ---- a flood's source sightings in C (issue 16 item 1, held forged sources) -------------------------------------
 * sight(lru, keys, width, times, limit, after) -> (at, evicted, odd): BoundedLRU.sight_each on an Lru, each key the
 * next `width` bytes of `keys` and its value the next float64 of `times`, "seen again" being a time `after` seconds
 * or more after the stored one, or earlier than it (link._seen_again). For each key in turn: absent, it goes in at
 * the recent end (a bytes key and a float made only then) and, the table over `limit`, its oldest entry goes
 * (counted in `evicted`); present, it moves to the recent end and the walk stops at it (`at`) when seen again.
 * `at` is len when none was. A present key whose value is not a float stops the walk before anything is done to it
 * (odd = 1): the caller's reference goes on from there. Python code can run only where an evicted entry is let go
 * (a value put through the Lru's mapping methods may have a __del__): nothing borrowed is held across that decref,
 * and the next key is looked up afresh. */
static PyObject *sight(PyObject *self, PyObject *args)
{
    PyObject *table;
    Py_buffer keys, times;
    Py_ssize_t width, limit;
    double after;
    if (!PyArg_ParseTuple(args, "O!y*ny*nd", &LruType, &table, &keys, &width, &times, &limit, &after))
        return NULL;
    Lru *t = (Lru *)table;
    PyObject *result = NULL;
    Py_ssize_t n = times.len / (Py_ssize_t)sizeof(double), at = 0, evicted = 0;
    int odd = 0;
    if (width < 1 || limit < 1 || times.len % (Py_ssize_t)sizeof(double) || width > PY_SSIZE_T_MAX / (n ? n : 1)
            || keys.len != n * width) {   /* the product tested only once it cannot overflow */
        PyErr_SetString(PyExc_ValueError, "sight: keys must be len(times) rows of width bytes, limit >= 1");
        goto done;
    }
    const char *k = (const char *)keys.buf;
    for (; at < n; at++, k += width) {
        double ts;
        memcpy(&ts, (const char *)times.buf + at * sizeof(double), sizeof(double));
        uint64_t h = siphash13((const uint8_t *)k, (size_t)width);
        Py_ssize_t i = lru_find(t, k, width, h);
        if (i >= 0) {
            uint32_t e = ENTRY(t, i);
            PyObject *first = t->ent[e].value;
            if (!PyFloat_CheckExact(first)) {
                odd = 1;
                break;
            }
            lru_unlink(t, e);
            lru_link_tail(t, e);
            t->stamp++;
            double f = PyFloat_AS_DOUBLE(first);
            if (ts - f >= after || ts < f)
                break;
            continue;
        }
        PyObject *key = PyBytes_FromStringAndSize(k, width), *value = key ? PyFloat_FromDouble(ts) : NULL;
        if (value == NULL || lru_reserve(t) < 0) {
            Py_XDECREF(key);
            Py_XDECREF(value);
            goto done;
        }
        lru_append(t, key, value, h);
        if (t->n > limit) {   /* one in, one out: BoundedLRU._shrink */
            PyObject *old_key, *old_value;
            lru_remove(t, lru_slot_of(t, t->head), &old_key, &old_value);
            evicted++;
            Py_DECREF(old_key);
            Py_DECREF(old_value);
        }
    }
    result = Py_BuildValue("nni", at, evicted, odd);
done:
    PyBuffer_Release(&keys);
    PyBuffer_Release(&times);
    return result;
}
/* ---- end of a flood's source sightings ---- */

/* ---- held sources looked up by their printed IPv4 address (issue 16 item 1, held forged sources) ----------------
 * known_v4(mapping, marks, words, v4, start, stop, count) -> int: over the held candidates start:stop, each an IPv4
 * address (words: uint32, host order) where v4 (one byte each) says so: with count false, the first whose
 * dotted-decimal text is a key of mapping (Inventory._by_address) or that is not IPv4 (the caller asks about it), else
 * stop; with count true, how many IPv4 ones are keys. Flow.orig_text's text (ip_text: str(IPv4Address)), made in a
 * buffer and looked up as a str; the reference prints them all in numpy (new_flows._texts) and asks
 * Inventory.first_known.
 *
 * marks (V4_MARKS bytes, Inventory.v4_marks) has the bit of every IPv4 address ever made a key of mapping set
 * (mark_v4, at each insertion; a superset, made again from the current keys now and then by Inventory._remark so
 * that the marks of addresses that left do not fill it): an address whose bit is clear is not a key, and is
 * not looked up. On a full flow table the dict's entries are out of cache by the next window, and its probe was
 * the held source's largest cost; the marks (128 KiB) answer most sources from cache, and a set bit (~1% of them
 * with max_devices known addresses) is looked up as before. */
#define V4_MARK_BITS 20
#define V4_MARKS (1 << (V4_MARK_BITS - 3))

static uint32_t v4_mark(uint32_t w)
{
    return (uint32_t)(w * 2654435761u) >> (32 - V4_MARK_BITS);   /* Knuth's multiplicative hash: the high bits */
}
static char octet_text[256][4];   /* each octet's digits then a dot, and how many digits: made once */
static uint8_t octet_len[256];

static void octets_made(void)
{
    for (unsigned v = 0; v < 256; v++) {
        int n = 0;
        if (v >= 100)
            octet_text[v][n++] = (char)('0' + v / 100);
        if (v >= 10)
            octet_text[v][n++] = (char)('0' + v / 10 % 10);
        octet_text[v][n++] = (char)('0' + v % 10);
        octet_text[v][n] = '.';
        octet_len[v] = (uint8_t)n;
    }
}

static Py_ssize_t dotted(uint32_t w, char *out)
{
    Py_ssize_t n = 0;
    for (int shift = 24; shift > 0; shift -= 8) {   /* four bytes copied, the digits and the dot kept */
        unsigned v = (w >> shift) & 0xFF;
        memcpy(out + n, octet_text[v], 4);
        n += octet_len[v] + 1;
    }
    memcpy(out + n, octet_text[w & 0xFF], 4);
    return n + octet_len[w & 0xFF];
}

static PyObject *known_v4(PyObject *self, PyObject *args)
{
    PyObject *mapping;
    Py_buffer marks, words, v4;
    Py_ssize_t start, stop;
    int count;
    if (!PyArg_ParseTuple(args, "O!y*y*y*nnp", &PyDict_Type, &mapping, &marks, &words, &v4, &start, &stop, &count))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = v4.len, found = 0, at = start;
    if (!PyDict_CheckExact(mapping) || marks.len != V4_MARKS || words.len != n * (Py_ssize_t)sizeof(uint32_t)
            || start < 0 || start > stop || stop > n) {
        PyErr_SetString(PyExc_ValueError,
                        "known_v4: a dict, V4_MARKS marks, as many words as flags, 0 <= start <= stop <= len");
        goto done;
    }
    const uint8_t *is_v4 = (const uint8_t *)v4.buf, *mark = (const uint8_t *)marks.buf;
    for (; at < stop; at++) {
        if (!is_v4[at]) {
            if (count)
                continue;
            break;
        }
        uint32_t w;
        memcpy(&w, (const char *)words.buf + at * sizeof(uint32_t), sizeof w);
        uint32_t bit = v4_mark(w);
        if (!(mark[bit >> 3] & (1u << (bit & 7))))
            continue;   /* never a key */
        char text[20];
        Py_ssize_t len = dotted(w, text);
        PyObject *str = PyUnicode_New(len, 127);
        if (str == NULL)
            goto done;
        memcpy(PyUnicode_1BYTE_DATA(str), text, (size_t)len);
        int in = PyDict_Contains(mapping, str);   /* str keys: no Python code runs */
        Py_DECREF(str);
        if (in < 0)
            goto done;
        if (in) {
            found++;
            if (!count)
                break;
        }
    }
    result = PyLong_FromSsize_t(count ? found : at);
done:
    PyBuffer_Release(&marks);
    PyBuffer_Release(&words);
    PyBuffer_Release(&v4);
    return result;
}

/* mark_v4(marks, text): the bit of the IPv4 address written `text` set in marks (a bytearray of V4_MARKS), when
 * text is four dot-separated decimal octets (leading zeros read as the number: a superset does no harm); any other
 * text (IPv6) sets nothing, as known_v4 only looks up the canonical text of an IPv4 address. */
static PyObject *mark_v4(PyObject *self, PyObject *args)
{
    Py_buffer marks;
    PyObject *text;
    if (!PyArg_ParseTuple(args, "w*U", &marks, &text))
        return NULL;
    if (marks.len != V4_MARKS) {
        PyBuffer_Release(&marks);
        PyErr_SetString(PyExc_ValueError, "mark_v4: marks of V4_MARKS bytes");
        return NULL;
    }
    Py_ssize_t len = PyUnicode_GET_LENGTH(text), i = 0;
    uint32_t w = 0;
    int ok = PyUnicode_KIND(text) == PyUnicode_1BYTE_KIND && len <= 15;
    const Py_UCS1 *c = ok ? PyUnicode_1BYTE_DATA(text) : NULL;
    for (int octet = 0; ok && octet < 4; octet++) {
        unsigned v = 0;
        int digits = 0;
        while (i < len && c[i] >= '0' && c[i] <= '9' && digits < 3) {
            v = v * 10 + (unsigned)(c[i++] - '0');
            digits++;
        }
        ok = digits > 0 && v <= 255 && (octet == 3 ? i == len : i < len && c[i++] == '.');
        w = w << 8 | v;
    }
    if (ok) {
        uint32_t bit = v4_mark(w);
        ((uint8_t *)marks.buf)[bit >> 3] |= (uint8_t)(1u << (bit & 7));
    }
    PyBuffer_Release(&marks);
    Py_RETURN_NONE;
}
/* ---- end of held sources looked up ---- */

/* ---- a run of held sightings' budget (issue 16 item 1, held forged sources) --------------------------------------
 * holding(times, tokens, clock, per_second) -> (count, after): AdmissionBudget.holding's refill below one token in
 * order, one sighting at a time: the refill is (t - previous) * per_second where time went forward, else nothing
 * (the previous of the first is clock), added to the tokens in turn; count is the first sighting that leaves at
 * least one token (it is let in), else len(times), and after (float64 bytes) the tokens after each up to that one
 * included. The same float operations in the same order as the reference's numpy steps (np.where, then the running
 * sum np.add.accumulate, which adds in order), stopped at the first sighting let in instead of going on. */
static PyObject *holding(PyObject *self, PyObject *args)
{
    Py_buffer times;
    double tokens, clock, rate;
    if (!PyArg_ParseTuple(args, "y*ddd", &times, &tokens, &clock, &rate))
        return NULL;
    PyObject *result = NULL, *after = NULL;
    Py_ssize_t n = times.len / (Py_ssize_t)sizeof(double), at = 0;
    if (times.len % (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_ValueError, "holding: times are float64");
        goto done;
    }
    if ((after = PyBytes_FromStringAndSize(NULL, times.len)) == NULL)
        goto done;
    double *out = (double *)PyBytes_AS_STRING(after), acc = tokens, previous = clock;
    for (; at < n; at++) {
        double t;
        memcpy(&t, (const char *)times.buf + at * sizeof(double), sizeof t);
        double step = t > previous ? (t - previous) * rate : 0.0;
        acc = at ? acc + step : step + tokens;
        out[at] = acc;
        previous = t;
        if (acc >= 1.0)
            break;
    }
    if (at < n && _PyBytes_Resize(&after, (at + 1) * (Py_ssize_t)sizeof(double)) < 0)
        goto done;
    result = Py_BuildValue("nO", at, after);
done:
    Py_XDECREF(after);
    PyBuffer_Release(&times);
    return result;
}
/* ---- end of a run's budget ---- */

/* key_hash(key) -> int: the Lru's hash of a bytes key, for the tests (the secret is the process's own). */
static PyObject *key_hash_py(PyObject *self, PyObject *key)
{
    uint64_t h;
    if (!key_hash(key, &h)) {
        PyErr_SetString(PyExc_TypeError, "key_hash: keys are bytes");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(h);
}

static PyMethodDef methods[] = {
    {"key_hash", key_hash_py, METH_O, "The Lru's keyed hash of a bytes key."},
    {"apply", (PyCFunction)(void (*)(void))apply, METH_FASTCALL, "Apply a batch's flow groups to the flow table's OrderedDicts."},
    {"evict", evict, METH_VARARGS, "Take the least recently active flows out of the flow table's OrderedDicts."},
    {"expire", (PyCFunction)(void (*)(void))expire, METH_FASTCALL, "Take the flows idle past their table's timeout from the tables' heads."},
    {"orient", (PyCFunction)(void (*)(void))orient, METH_FASTCALL, "Each group's originator, ports, VLAN and first time, as flows.orient."},
    {"lazy_port", lazy_port, METH_VARARGS, "A Flow port slot's descriptor that reads the port from the key."},
    {"columns", columns, METH_VARARGS, "A list of flows' keys, originators, senders, MACs and first times as columns."},
    {"holding", holding, METH_VARARGS, "AdmissionBudget.holding's run of sightings below one token, in order."},
    {"known_v4", known_v4, METH_VARARGS, "The first (or the count) of IPv4 addresses whose text is a dict's key."},
    {"mark_v4", mark_v4, METH_VARARGS, "An IPv4 address's text marked in known_v4's marks."},
    {"sight", sight, METH_VARARGS, "BoundedLRU.sight_each of rows of bytes keys and their times on an Lru."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_flows", NULL, -1, methods};

PyMODINIT_FUNC PyInit__flows(void)
{
    uint64_t secret[2];
    if (PyType_Ready(&LazyPortType) < 0 || PyType_Ready(&LruType) < 0 || PyType_Ready(&LruIterType) < 0
            || draw_secret(secret, sizeof secret, "_flows") < 0)
        return NULL;
    sip_k0 = secret[0];
    sip_k1 = secret[1];
    octets_made();
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddObjectRef(m, "Lru", (PyObject *)&LruType) < 0
                      || PyModule_AddIntConstant(m, "V4_MARKS", V4_MARKS) < 0))
        Py_CLEAR(m);
    return m;
}
