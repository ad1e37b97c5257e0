/* wait() and as_completed(): block until some of many futures are done.
 *
 * Lib/concurrent/futures/_base.py is the specification.  The stdlib takes
 * every future's Condition, appends one waiter to every future's _waiters
 * list, and on the way out takes every Condition again to remove it: a
 * few microseconds per future per call.  Here a cfutures future gets a
 * cf_waitnode linked into it (two pointer writes, in the future's critical
 * section with the state check, so no completion falls between them), and
 * the one cf_event of the call is set by the node's notify function when
 * the future reaches a final state.
 *
 * Without the GIL, completions of different futures notify one call from
 * several threads at once, while the calling thread reads the tally: the
 * per-call bookkeeping (done[], the counts, as_completed's queue) is
 * guarded by the call's spin lock (mw->lock), which the notify functions
 * take inside the completing future's critical section (a PyMutex could
 * block and so suspend that section).  The calling thread frees the call
 * only after it has unlinked every node inside that node's future's
 * critical section, and detached every foreign waiter inside the waiter's
 * own: after that no notification can still be running.
 *
 * Any other concurrent.futures.Future (the stdlib's, ProcessPoolExecutor's,
 * a subclass) is waited on through its own protocol: under f._condition,
 * read f._state and append a waiter object with add_result(),
 * add_exception() and add_cancelled() to f._waiters.  Both kinds feed the
 * same per-call bookkeeping (multiwait), so one call takes any mix.
 *
 * As in the stdlib, a future counts as done only in CANCELLED_AND_NOTIFIED
 * or FINISHED: a bare cancel() is seen once the executor (or whoever runs
 * the future) calls set_running_or_notify_cancel(). */
#include "cfutures.h"

#include <math.h>
#include <stddef.h>

/* How a future ended, as the stdlib's waiter methods tell it. */
enum { HOW_RESULT, HOW_EXCEPTION, HOW_CANCELLED };

/* ---- the bookkeeping of one wait()/as_completed() call ---------------- */

typedef struct multiwait multiwait;
/* Called when item i reaches a final state, from a notify function or a
 * waiter method, or by the calling thread: must not call into Python nor
 * block; takes mw->lock itself. */
typedef void (*mw_done_fn)(multiwait *mw, Py_ssize_t i, int how);

/* flags[i] */
enum {
    F_CF = 1,           /* items[i] is a cfutures future: C wait node */
    F_LINKED = 2,       /* nodes[i] was linked (notify unlinks it too) */
    F_WAITER = 4,       /* waiters[i] is in items[i]._waiters */
};

/* flags[] is the calling thread's alone; whether an item counts as done
 * (wait()) is in done[], which notifications write, under mw->lock. */

struct multiwait {
    cf_state *st;
    Py_ssize_t n;
    Py_ssize_t nforeign;     /* items that are not cfutures futures */
    Py_ssize_t ndone;        /* cfutures futures done when filled */
    Py_ssize_t ninstalled;   /* items with F_LINKED or F_WAITER */
    PyObject **items;        /* the distinct futures */
    unsigned char *flags;
    cf_waitnode *nodes;      /* written when linked; all four arrays
                                are one block, headed by items */
    PyObject **waiters;      /* made at the first foreign future */
    unsigned char *done;     /* wait(): item i counts as done; mw->lock */
    mw_done_fn on_done;
    cf_spinlock lock;        /* done[], the counts of waitcall, the queue
                                of ascompleted: see the top of the file */
    cf_event ev;             /* the one event the caller sleeps on */
};

/* A waiter object in a foreign future's _waiters.  It holds no
 * references: the call that installed it detaches it (owner = NULL)
 * before it goes, so a late add_result() on a waiter that could not be
 * removed is harmless.  owner and fired are read and written in the
 * waiter's critical section: once the call has detached it there, no
 * add_result() is still inside on_done. */
typedef struct {
    PyObject_HEAD
    multiwait *owner;
    Py_ssize_t index;
    int fired;
} waiter_object;

static void
mw_init(multiwait *mw, cf_state *st, mw_done_fn on_done)
{
    mw->st = st;
    mw->n = 0;
    mw->nforeign = 0;
    mw->ndone = 0;
    mw->ninstalled = 0;
    mw->on_done = on_done;
    mw->items = NULL;
    mw->flags = NULL;
    mw->nodes = NULL;
    mw->waiters = NULL;
    mw->done = NULL;
    mw->lock.held = 0;
}

static void
mw_free(multiwait *mw)
{
    /* items heads the one block of items, done, flags and nodes. */
    PyMem_Free(mw->items);
    PyMem_Free(mw->waiters);
    mw_init(mw, mw->st, mw->on_done);
}

static inline int
is_cf_future(cf_state *st, PyObject *op)
{
    /* The exact types first: it saves an MRO walk per future. */
    PyTypeObject *tp = Py_TYPE(op);
    return tp == st->public_future_type || tp == st->future_type
           || PyType_IsSubtype(tp, st->future_type);
}

static void mw_notify(cf_waitnode *node, PyObject *future, int kind);

/* What mw_fill does with a cfutures future that is not done. */
enum {
    FILL_SNAPSHOT,          /* nothing: mw_install links it later */
    FILL_LINK,              /* link its node */
    FILL_LINK_UNTIL_DONE,   /* link its node, until a future is found done
                               (wait(FIRST_COMPLETED): the call returns at
                               once then, and unlinks what it linked) */
};

/* done[i], read by the calling thread while notifications may run. */
static int
mw_is_done(multiwait *mw, Py_ssize_t i)
{
    cf_spin_lock(&mw->lock);
    int d = mw->done[i];
    cf_spin_unlock(&mw->lock);
    return d;
}

/* Take the distinct futures of `fs`: new references when `own`, else
 * borrowed from fs.  fs must be a set this call made (PySet_New) and
 * never showed anyone: no other thread can change it, and nothing was
 * ever discarded from it, so its table is read directly, a slot at a
 * time, rather than through the set's iterator (an object and a call per
 * future from 3.13) or _PySet_NextEntry (private, and several times the
 * cost of the read).  A slot holds a future if its key is set and is not
 * the dummy of a deleted entry (whose hash is -1, which no real hash
 * is): the test keeps the walk right even if fs ever had a deletion.
 * `link` (FILL_*) says whether the pending cfutures futures get their
 * nodes now; a linked node may be notified before this returns. */
static int
mw_fill(multiwait *mw, PyObject *fs, int own, int link)
{
    Py_ssize_t n = PySet_GET_SIZE(fs);
    if (n == 0) {
        return 0;
    }
    /* One block for the per-item arrays: items (zeroed: as_completed's
     * GC traversal may see them before they are filled), done[] and
     * flags[] (zeroed), then the wait nodes (written when linked). */
    size_t head = (size_t)n * sizeof(PyObject *) + 2 * (size_t)n;
    size_t head_aligned = (head + _Alignof(cf_waitnode) - 1)
                          & ~(size_t)(_Alignof(cf_waitnode) - 1);
    if ((size_t)n > (PY_SSIZE_T_MAX - head_aligned) / sizeof(cf_waitnode)) {
        PyErr_NoMemory();
        return -1;
    }
    char *block = PyMem_Malloc(head_aligned + (size_t)n * sizeof(cf_waitnode));
    if (block == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(block, 0, head);
    mw->items = (PyObject **)block;
    mw->done = (unsigned char *)(mw->items + n);
    mw->flags = mw->done + n;
    mw->nodes = (cf_waitnode *)(block + head_aligned);

    /* Each item's flags: F_CF, and done[i] for a cfutures future that is
     * done already (the snapshot), or F_LINKED when `link` says so and it
     * is not: one look at each future, in one critical section, with the
     * state check that must go with a link.  The snapshot's done[i] is
     * written without mw->lock: nothing notifies item i unless it is
     * linked, and a notification of another item writes another byte.
     * The counts stay in locals while the loop calls out to link. */
    PyObject **items = mw->items;
    unsigned char *done = mw->done, *flags = mw->flags;
    cf_waitnode *nodes = mw->nodes;
    Py_ssize_t nforeign = 0, ndone = 0, nlinked = 0;
    setentry *entry = ((PySetObject *)fs)->table;
    setentry *end = entry + ((PySetObject *)fs)->mask + 1;
    Py_ssize_t i = 0;
    for (; entry < end && i < n; entry++) {
        PyObject *f = entry->key;
        if (f == NULL || entry->hash == -1) {
            continue;
        }
        items[i] = own ? Py_NewRef(f) : f;
        if (!is_cf_future(mw->st, f)) {
            nforeign++;
            flags[i++] = 0;
            continue;
        }
        cf_future *cf = (cf_future *)f;
        flags[i] = F_CF;
        if (link == FILL_SNAPSHOT) {
            if (cf_future_state(cf) >= CF_CANCELLED_AND_NOTIFIED) {
                ndone++;
                done[i] = 1;
            }
            i++;
            continue;
        }
        CF_BEGIN_CRITICAL(cf)
        if (cf->state >= CF_CANCELLED_AND_NOTIFIED) {
            ndone++;
            done[i] = 1;
            if (link == FILL_LINK_UNTIL_DONE) {
                link = FILL_SNAPSHOT;
            }
        }
        else {
            cf_future_link(cf, &nodes[i], mw_notify, mw);
            flags[i] = F_CF | F_LINKED;
            nlinked++;
        }
        CF_END_CRITICAL()
        i++;
    }
    mw->nforeign = nforeign;
    mw->ndone = ndone;
    mw->ninstalled = nlinked;
    mw->n = i;
    return 0;
}

static void
mw_notify(cf_waitnode *node, PyObject *future, int kind)
{
    if (kind == CF_EV_CANCELLED) {
        /* The stdlib's wait() does not see a bare cancel(); the node stays
         * linked for CF_EV_CANCEL_NOTIFIED. */
        return;
    }
    multiwait *mw = (multiwait *)node->owner;
    int how = HOW_CANCELLED;
    if (kind == CF_EV_FINISHED) {
        how = ((cf_future *)future)->exception != NULL ? HOW_EXCEPTION
                                                       : HOW_RESULT;
    }
    mw->on_done(mw, node - mw->nodes, how);
}

/* In f's critical section. */
static int
cf_how_done(cf_future *f)
{
    if (f->state == CF_FINISHED) {
        return f->exception != NULL ? HOW_EXCEPTION : HOW_RESULT;
    }
    return HOW_CANCELLED;
}

/* ---- the stdlib's protocol, for any other concurrent.futures.Future ---- */

/* Is the state name one of CANCELLED_AND_NOTIFIED, FINISHED?  Sets *how,
 * unless `how` is NULL: then f._exception, which the stdlib's wait() and
 * as_completed() never read, is not looked up either. */
static int
foreign_state_done(multiwait *mw, PyObject *f, PyObject *state, int *how)
{
    cf_state *st = mw->st;
    int r = PyObject_RichCompareBool(state, st->state_names[CF_FINISHED],
                                     Py_EQ);
    if (r < 0) {
        return -1;
    }
    if (r) {
        if (how != NULL) {
            PyObject *exc = PyObject_GetAttr(f, st->str__exception);
            if (exc == NULL) {
                return -1;
            }
            *how = exc != Py_None ? HOW_EXCEPTION : HOW_RESULT;
            Py_DECREF(exc);
        }
        return 1;
    }
    r = PyObject_RichCompareBool(
        state, st->state_names[CF_CANCELLED_AND_NOTIFIED], Py_EQ);
    if (r > 0 && how != NULL) {
        *how = HOW_CANCELLED;
    }
    return r;
}

static int
call_noargs(PyObject *obj, PyObject *name)
{
    PyObject *r = PyObject_CallMethodNoArgs(obj, name);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* f._condition, acquired; NULL with an exception. */
static PyObject *
foreign_lock(cf_state *st, PyObject *f)
{
    PyObject *cond = PyObject_GetAttr(f, st->str__condition);
    if (cond != NULL && call_noargs(cond, st->str_acquire) < 0) {
        Py_CLEAR(cond);
    }
    return cond;
}

/* Release what foreign_lock took, keeping a pending exception; returns
 * `rc`, or -1 if releasing failed. */
static int
foreign_unlock(cf_state *st, PyObject *cond, int rc)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (call_noargs(cond, st->str_release) < 0) {
        if (type == NULL) {
            PyErr_Fetch(&type, &value, &tb);
            rc = -1;
        }
        else {
            PyErr_WriteUnraisable(cond);
        }
    }
    PyErr_Restore(type, value, tb);
    Py_DECREF(cond);
    return rc;
}

/* f._waiters.append(w) */
static int
waiters_append(cf_state *st, PyObject *f, PyObject *w)
{
    PyObject *list = PyObject_GetAttr(f, st->str__waiters);
    if (list == NULL) {
        return -1;
    }
    int rc;
    if (PyList_CheckExact(list)) {
        rc = PyList_Append(list, w);
    }
    else {
        PyObject *r = PyObject_CallMethodOneArg(list, st->str_append, w);
        rc = r == NULL ? -1 : 0;
        Py_XDECREF(r);
    }
    Py_DECREF(list);
    return rc;
}

/* f._waiters.remove(w) */
static int
waiters_remove(cf_state *st, PyObject *f, PyObject *w)
{
    PyObject *list = PyObject_GetAttr(f, st->str__waiters);
    if (list == NULL) {
        return -1;
    }
    int rc = 1;
    if (PyList_CheckExact(list)) {
        /* By identity, which is what list.remove() finds for our waiter,
         * without calling __eq__ on the other waiters.  In the list's
         * critical section: items are only compared, never borrowed, and
         * the removal (which frees nothing: we hold w) happens there
         * too. */
        CF_BEGIN_CRITICAL(list)
        for (Py_ssize_t k = PyList_GET_SIZE(list) - 1; k >= 0; k--) {
            if (PyList_GET_ITEM(list, k) == w) {
                rc = PyList_SetSlice(list, k, k + 1, NULL);
                break;
            }
        }
        CF_END_CRITICAL()
    }
    if (rc == 1) {
        /* Not a list, or not found: let remove() do it or say why not. */
        PyObject *r = PyObject_CallMethodOneArg(list, st->str_remove, w);
        rc = r == NULL ? -1 : 0;
        Py_XDECREF(r);
    }
    Py_DECREF(list);
    return rc;
}

/* Under f._condition: read f._state, and install a waiter when `install`
 * and the future is not done.  1 done (and *how, if `how` is not NULL),
 * 0 not done, -1 error. */
static int
foreign_check(multiwait *mw, Py_ssize_t i, int install, int *how)
{
    cf_state *st = mw->st;
    PyObject *f = mw->items[i];
    PyObject *cond = foreign_lock(st, f);
    if (cond == NULL) {
        return -1;
    }
    int done = -1;
    PyObject *state = PyObject_GetAttr(f, st->str__state);
    if (state != NULL) {
        done = foreign_state_done(mw, f, state, how);
        Py_DECREF(state);
    }
    if (done == 0 && install && mw->waiters == NULL) {
        mw->waiters = PyMem_Calloc(mw->n, sizeof(PyObject *));
        if (mw->waiters == NULL) {
            PyErr_NoMemory();
            done = -1;
        }
    }
    if (done == 0 && install) {
        waiter_object *w = PyObject_New(waiter_object, st->waiter_type);
        if (w == NULL) {
            done = -1;
        }
        else {
            w->owner = mw;
            w->index = i;
            w->fired = 0;
            if (waiters_append(st, f, (PyObject *)w) < 0) {
                w->owner = NULL;
                Py_DECREF(w);
                done = -1;
            }
            else {
                mw->waiters[i] = (PyObject *)w;
                mw->flags[i] |= F_WAITER;
                mw->ninstalled++;
            }
        }
    }
    return foreign_unlock(st, cond, done);
}

/* Start watching item i: 1 already done (nothing installed; *how set if
 * `how` is not NULL), 0 installed, -1 error. */
static inline int
mw_install(multiwait *mw, Py_ssize_t i, int *how)
{
    if (mw->flags[i] & F_CF) {
        cf_future *cf = (cf_future *)mw->items[i];
        int done;
        /* Check and link in one critical section: no completion can fall
         * between them. */
        CF_BEGIN_CRITICAL(cf)
        done = cf->state >= CF_CANCELLED_AND_NOTIFIED;
        if (done && how != NULL) {
            *how = cf_how_done(cf);
        }
        else {
            cf_future_link(cf, &mw->nodes[i], mw_notify, mw);
            mw->flags[i] |= F_LINKED;
            mw->ninstalled++;
        }
        CF_END_CRITICAL()
        return done;
    }
    return foreign_check(mw, i, 1, how);
}

/* Unlink node i in its future's critical section: a no-op if the
 * notification unlinked it already, and either way, once out of the
 * section, no notify of it is still running. */
static inline void
mw_unlink(multiwait *mw, Py_ssize_t i)
{
    CF_BEGIN_CRITICAL(mw->items[i])
    cf_future_unlink(&mw->nodes[i]);
    CF_END_CRITICAL()
}

/* Detach a foreign future's waiter from its call: a later add_result()
 * does nothing, and none is still running once this returns. */
static void
waiter_detach(waiter_object *w)
{
    CF_BEGIN_CRITICAL(w)
    w->owner = NULL;
    CF_END_CRITICAL()
}

/* Stop watching item i.  Always detaches; -1 (with an exception) if a
 * foreign future would not let its waiter go. */
static int
mw_uninstall(multiwait *mw, Py_ssize_t i)
{
    unsigned char fl = mw->flags[i];
    if (fl & F_LINKED) {
        mw_unlink(mw, i);
        mw->flags[i] &= ~F_LINKED;
        mw->ninstalled--;
    }
    if (!(fl & F_WAITER)) {
        return 0;
    }
    mw->ninstalled--;
    waiter_object *w = (waiter_object *)mw->waiters[i];
    mw->waiters[i] = NULL;
    mw->flags[i] &= ~F_WAITER;
    waiter_detach(w);
    /* with f._condition: f._waiters.remove(waiter), as the stdlib does. */
    cf_state *st = mw->st;
    PyObject *f = mw->items[i];
    int rc = -1;
    PyObject *cond = foreign_lock(st, f);
    if (cond != NULL) {
        rc = foreign_unlock(st, cond,
                            waiters_remove(st, f, (PyObject *)w));
    }
    Py_DECREF(w);
    return rc;
}

/* Detach everything without calling Python (GC clear, teardown). */
static void
mw_detach_all(multiwait *mw)
{
    for (Py_ssize_t i = 0; mw->ninstalled > 0 && i < mw->n; i++) {
        if (mw->flags[i] & F_LINKED) {
            mw_unlink(mw, i);
        }
        if (mw->flags[i] & F_WAITER) {
            waiter_object *w = (waiter_object *)mw->waiters[i];
            mw->waiters[i] = NULL;
            waiter_detach(w);
            Py_DECREF(w);
        }
        if (mw->flags[i] & (F_LINKED | F_WAITER)) {
            mw->ninstalled--;
        }
        mw->flags[i] &= ~(F_LINKED | F_WAITER);
    }
}

/* Uninstall every item still held.  All go even if one fails: the first
 * error is kept, later ones are reported as unraisable. */
static int
mw_uninstall_all(multiwait *mw)
{
    int rc = 0;
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    /* The common case stays in locals while the loop calls out to
     * unlink: a linked cfutures future. */
    PyObject **items = mw->items;
    unsigned char *flags = mw->flags;
    Py_ssize_t n = mw->n, left = mw->ninstalled;
    for (Py_ssize_t i = 0; left > 0 && i < n; i++) {
        unsigned char fl = flags[i];
        if (fl == (F_CF | F_LINKED)) {
            mw_unlink(mw, i);
            flags[i] = F_CF;
            left--;
            continue;
        }
        if (items[i] == NULL || !(fl & (F_LINKED | F_WAITER))) {
            continue;
        }
        mw->ninstalled = left;
        if (mw_uninstall(mw, i) < 0) {
            if (rc == 0) {
                rc = -1;
                PyErr_Fetch(&type, &value, &tb);
            }
            else {
                PyErr_WriteUnraisable(items[i]);
            }
        }
        left = mw->ninstalled;
    }
    mw->ninstalled = left;
    if (rc < 0) {
        PyErr_Restore(type, value, tb);
    }
    return rc;
}

/* ---- the waiter type foreign futures call back -------------------------- */

static PyObject *
waiter_fire(waiter_object *self, int how)
{
    /* on_done neither blocks nor calls Python: the section is never
     * suspended, so waiter_detach() waits for it. */
    CF_BEGIN_CRITICAL(self)
    if (self->owner != NULL && !self->fired) {
        self->fired = 1;
        self->owner->on_done(self->owner, self->index, how);
    }
    CF_END_CRITICAL()
    Py_RETURN_NONE;
}

static PyObject *
waiter_add_result(waiter_object *self, PyObject *future)
{
    return waiter_fire(self, HOW_RESULT);
}

static PyObject *
waiter_add_exception(waiter_object *self, PyObject *future)
{
    return waiter_fire(self, HOW_EXCEPTION);
}

static PyObject *
waiter_add_cancelled(waiter_object *self, PyObject *future)
{
    return waiter_fire(self, HOW_CANCELLED);
}

static void
waiter_dealloc(waiter_object *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef waiter_methods[] = {
    {"add_result", (PyCFunction)waiter_add_result, METH_O, NULL},
    {"add_exception", (PyCFunction)waiter_add_exception, METH_O, NULL},
    {"add_cancelled", (PyCFunction)waiter_add_cancelled, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot waiter_slots[] = {
    {Py_tp_doc, "What cfutures.wait() and as_completed() put in the "
                "_waiters of a concurrent.futures.Future."},
    {Py_tp_dealloc, waiter_dealloc},
    {Py_tp_methods, waiter_methods},
    {0, NULL},
};

static PyType_Spec waiter_spec = {
    .name = "cfutures._cfutures._Waiter",
    .basicsize = sizeof(waiter_object),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION
             | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = waiter_slots,
};

/* ---- wait() ------------------------------------------------------------- */

enum { MODE_FIRST_COMPLETED, MODE_FIRST_EXCEPTION, MODE_ALL_COMPLETED,
       MODE_INVALID };

typedef struct {
    multiwait mw;            /* first: on_done casts back */
    int mode;
    /* mw.lock guards these three once anything is installed. */
    int armed;               /* all installed: notifications decide */
    Py_ssize_t ndone;        /* items with done[i] */
    Py_ssize_t nraised;      /* of them, told by add_exception */
} waitcall;

/* Is the condition of the call met?  Only asked once it is armed: the
 * early returns before that follow the stdlib's snapshot rules.  Under
 * mw.lock. */
static void
wait_check(waitcall *wc)
{
    int met;
    switch (wc->mode) {
    case MODE_FIRST_COMPLETED:
        met = wc->ndone > 0;
        break;
    case MODE_FIRST_EXCEPTION:
        met = wc->nraised > 0 || wc->ndone == wc->mw.n;
        break;
    default:
        met = wc->ndone == wc->mw.n;
        break;
    }
    if (met) {
        cf_event_set(&wc->mw.ev);
    }
}

static void
wait_on_done(multiwait *mw, Py_ssize_t i, int how)
{
    waitcall *wc = (waitcall *)mw;
    cf_spin_lock(&mw->lock);
    if (!mw->done[i]) {
        mw->done[i] = 1;
        wc->ndone++;
        if (how == HOW_EXCEPTION) {
            wc->nraised++;
        }
        if (wc->armed) {
            wait_check(wc);
        }
    }
    cf_spin_unlock(&mw->lock);
}

/* The stdlib's early FIRST_EXCEPTION test on a done future:
 * `not f.cancelled() and f.exception() is not None`. */
static int
raised(cf_state *st, PyObject *f)
{
    if (is_cf_future(st, f)) {
        PyObject *result, *exc;
        int state = cf_future_outcome((cf_future *)f, &result, &exc);
        int r = state == CF_FINISHED && exc != NULL && exc != Py_None;
        Py_XDECREF(result);
        Py_XDECREF(exc);
        return r;
    }
    PyObject *r = PyObject_CallMethodNoArgs(f, st->str_cancelled);
    if (r == NULL) {
        return -1;
    }
    int c = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (c != 0) {
        return c < 0 ? -1 : 0;
    }
    r = PyObject_CallMethodNoArgs(f, st->str_exception);
    if (r == NULL) {
        return -1;
    }
    c = r != Py_None;
    Py_DECREF(r);
    return c;
}

/* DoneAndNotDoneFutures(done, not_done); `fs` (our private copy of the
 * argument) becomes not_done, or done when every item is.  Everything is
 * uninstalled: done[] is ours. */
static PyObject *
wait_result(cf_state *st, PyObject *fs, waitcall *wc)
{
    Py_ssize_t ndone = 0;
    for (Py_ssize_t i = 0; i < wc->mw.n; i++) {
        ndone += wc->mw.done[i];        /* 0 or 1 */
    }
    if (ndone == wc->mw.n && ndone > 0) {
        /* All done (submit all, wait for all): the private copy is the
         * done set as it is, rather than a new set filled one by one and
         * the copy emptied (a third of what wait() cost per future). */
        PyObject *not_done = PySet_New(NULL);
        if (not_done == NULL) {
            return NULL;
        }
        PyObject *r = PyObject_CallFunctionObjArgs(
            st->DoneAndNotDoneFutures, fs, not_done, NULL);
        Py_DECREF(not_done);
        return r;
    }
    PyObject *done = PySet_New(NULL);
    if (done == NULL) {
        return NULL;
    }
    /* Typically a few of many (FIRST_COMPLETED): found with memchr, and
     * no further than the last. */
    const unsigned char *flag = wc->mw.done, *end = flag + wc->mw.n;
    for (; ndone > 0 && (flag = memchr(flag, 1, end - flag)) != NULL;
         flag++, ndone--) {
        PyObject *f = wc->mw.items[flag - wc->mw.done];
        /* items are borrowed from fs: add before discarding. */
        if (PySet_Add(done, f) < 0 || PySet_Discard(fs, f) < 0) {
            Py_DECREF(done);
            return NULL;
        }
    }
    PyObject *r = PyObject_CallFunctionObjArgs(st->DoneAndNotDoneFutures,
                                               done, fs, NULL);
    Py_DECREF(done);
    return r;
}

static int
return_when_is(PyObject *rw, PyObject *value)
{
    return rw == value ? 1 : PyObject_RichCompareBool(rw, value, Py_EQ);
}

static int
parse_return_when(cf_state *st, PyObject *rw, int *mode)
{
    PyObject *values[3] = {st->FIRST_COMPLETED, st->FIRST_EXCEPTION,
                           st->ALL_COMPLETED};
    for (int m = 0; m < 3; m++) {
        int r = return_when_is(rw, values[m]);
        if (r != 0) {
            *mode = m;
            return r;
        }
    }
    *mode = MODE_INVALID;
    return 0;
}

/* A timeout that makes wait() a poll: a number <= 0, or NaN up to 3.13.
 * Anything else (None, a positive number, a bad value) is for
 * cf_parse_timeout, which the stdlib only evaluates when it blocks. */
static int
is_poll(PyObject *timeout)
{
    if (timeout == NULL
        || (!PyFloat_CheckExact(timeout) && !PyLong_CheckExact(timeout))) {
        return 0;
    }
    double secs = PyFloat_AsDouble(timeout);
    if (secs == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();      /* too large: not a poll */
        return 0;
    }
    return secs <= 0 || (secs != secs && CF_NAN_TIMEOUT_POLLS);
}

/* How long a blocking wait() polls before it sleeps (cf_poll). */
#define WAIT_SPIN_NS 30000

/* Uninstall everything; on the way out of an error, keep that error. */
static int
wait_uninstall(waitcall *wc)
{
    if (!PyErr_Occurred()) {
        return mw_uninstall_all(&wc->mw);
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (mw_uninstall_all(&wc->mw) < 0) {
        PyErr_WriteUnraisable(NULL);
    }
    PyErr_Restore(type, value, tb);
    return -1;
}

static PyObject *
cf_wait(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
        PyObject *kwnames)
{
    static const char *const names[] = {"fs", "timeout", "return_when"};
    cf_state *st = cf_get_state(module);
    PyObject *argv[3];
    if (cf_bind_args("wait", names, 1, 3, 0, args, nargs, kwnames, argv) < 0) {
        return NULL;
    }
    PyObject *timeout = argv[1];
    PyObject *return_when = argv[2] ? argv[2] : st->ALL_COMPLETED;

    /* A private copy: it dedups, holds the items while the GIL is
     * released, and becomes the not_done set. */
    PyObject *fs = PySet_New(argv[0]);
    if (fs == NULL) {
        return NULL;
    }
    PyObject *result = NULL;
    waitcall wc;
    wc.armed = 0;
    wc.ndone = 0;
    wc.nraised = 0;
    int have_event = 0;
    mw_init(&wc.mw, st, wait_on_done);
    if (parse_return_when(st, return_when, &wc.mode) < 0) {
        goto exit;
    }
    int poll = is_poll(timeout);
    /* The snapshot of the cfutures futures, taken while filling; unless
     * the call cannot block, their nodes are linked in the same look
     * (a call that then returns early unlinks them). */
    int link = poll || wc.mode == MODE_INVALID ? FILL_SNAPSHOT
               : wc.mode == MODE_FIRST_COMPLETED ? FILL_LINK_UNTIL_DONE
               : FILL_LINK;
    if (mw_fill(&wc.mw, fs, 0, link) < 0) {
        goto exit;
    }
    Py_ssize_t n = wc.mw.n;
    /* Items done when looked at and not installed: the snapshot. */
    Py_ssize_t nsnapshot = wc.mw.ndone;
    /* Linked nodes may have counted themselves already. */
    cf_spin_lock(&wc.mw.lock);
    wc.ndone += wc.mw.ndone;
    Py_ssize_t ndone_now = wc.ndone;
    cf_spin_unlock(&wc.mw.lock);

    /* The other futures, each under its _condition.  Unless the answer is
     * known to come from the snapshot alone, their waiters go in now, in
     * the same critical section (one Condition round trip per future, as
     * in the stdlib); a waiter that fires before we are armed only
     * counts. */
    int install_now = !poll && wc.mode != MODE_INVALID
                      && !(wc.mode == MODE_FIRST_COMPLETED && ndone_now > 0);
    for (Py_ssize_t i = 0; wc.mw.nforeign > 0 && i < n; i++) {
        if (wc.mw.flags[i] & F_CF) {
            continue;
        }
        /* How it ended does not matter here: the early FIRST_EXCEPTION
         * test asks the future, as the stdlib does. */
        int d = foreign_check(&wc.mw, i, install_now, NULL);
        if (d < 0) {
            wait_uninstall(&wc);
            goto exit;
        }
        if (d) {
            /* Done when we looked: part of the snapshot. */
            wait_on_done(&wc.mw, i, HOW_RESULT);
            nsnapshot++;
        }
    }

    /* The stdlib's early returns, on what is done so far (waiters that
     * fire meanwhile only add to it). */
    cf_spin_lock(&wc.mw.lock);
    Py_ssize_t ndone = wc.ndone, nraised = wc.nraised;
    cf_spin_unlock(&wc.mw.lock);
    int early = ndone == n
                || (wc.mode == MODE_FIRST_COMPLETED && ndone > 0);
    if (!early && wc.mode == MODE_FIRST_EXCEPTION && ndone > 0) {
        early = nraised > 0;
        for (Py_ssize_t i = 0; !early && i < n; i++) {
            if (mw_is_done(&wc.mw, i)) {
                early = raised(st, wc.mw.items[i]);
                if (early < 0) {
                    wait_uninstall(&wc);
                    goto exit;
                }
            }
        }
    }
    if (!early && wc.mode == MODE_INVALID) {
        /* Checked only here, as in the stdlib: a bad return_when passes
         * when everything is done already. */
        PyErr_Format(PyExc_ValueError, "Invalid return condition: %R",
                     return_when);
        goto exit;
    }
    if (early || poll) {
        /* A poll needs no waiters: the snapshot is the answer. */
        if (wait_uninstall(&wc) == 0) {
            result = wait_result(st, fs, &wc);
        }
        goto exit;
    }

    /* Whatever is neither installed nor in the snapshot: nothing, when
     * mw_fill linked every pending cfutures future and the loop above
     * installed every pending foreign one. */
    for (Py_ssize_t i = 0; wc.mw.ninstalled + nsnapshot < n && i < n; i++) {
        /* A cfutures future's done[i] is the snapshot's until its node
         * is linked: nothing else writes it, so it is read without the
         * lock (notifications write other bytes of done[]). */
        unsigned char fl = wc.mw.flags[i];
        if ((fl & (F_LINKED | F_WAITER))
            || ((fl & F_CF) ? wc.mw.done[i] : mw_is_done(&wc.mw, i))) {
            continue;
        }
        int how;
        int d = mw_install(&wc.mw, i, &how);
        if (d < 0) {
            wait_uninstall(&wc);
            goto exit;
        }
        if (d) {
            /* Finished since the snapshot: as if its waiter had run. */
            wait_on_done(&wc.mw, i, how);
        }
    }
    /* The event is made only now that we block: nothing sets it before
     * the call is armed, and most early returns and polls never get
     * here. */
    if (cf_event_init(&wc.mw.ev) < 0) {
        wait_uninstall(&wc);
        goto exit;
    }
    have_event = 1;
    cf_spin_lock(&wc.mw.lock);
    wc.armed = 1;
    wait_check(&wc);
    cf_spin_unlock(&wc.mw.lock);
    /* The completer is often a few microseconds away, on the other CPU:
     * poll briefly, as result() does, before paying for a futex sleep
     * and the wakeup of an idle CPU (tens of microseconds on a VM). */
    int64_t ns;
    int polled = 0;
    if (cf_parse_timeout(timeout, &ns) < 0
        || (polled = cf_poll(cf_event_is_set, &wc.mw.ev, &ns,
                              WAIT_SPIN_NS)) < 0
        || (!polled && cf_event_wait(&wc.mw.ev, ns) < 0)) {
        wait_uninstall(&wc);
        goto exit;
    }
    if (wait_uninstall(&wc) == 0) {
        result = wait_result(st, fs, &wc);
    }

exit:
    /* Every path above has uninstalled (or never installed); this only
     * drops what a failed uninstall left. */
    mw_detach_all(&wc.mw);
    if (have_event) {
        cf_event_fini(&wc.mw.ev);
    }
    mw_free(&wc.mw);
    Py_DECREF(fs);
    return result;
}

/* ---- as_completed() ----------------------------------------------------- */

/* The iterator as_completed() returns.  Like the stdlib's generator it
 * starts work at the first next(): it reads fs, starts the timeout clock
 * and installs its waiters then.  It yields the futures done at that time,
 * then the others in the order they finish, in batches as the stdlib does
 * (a batch is what finished by the time the previous batch ran out; the
 * timeout is checked between batches).  It drops its reference to a future
 * as it yields it. */
typedef struct {
    PyObject_HEAD
    multiwait mw;            /* items: strong refs until yielded */
    PyObject *fs;            /* the argument, until the first next() */
    PyObject *timeout;
    Py_ssize_t *queue;       /* indices of done items, in finishing order */
    Py_ssize_t q_tail;       /* written by notifications: mw.lock */
    Py_ssize_t q_head, batch_end;
    Py_ssize_t total, yielded;
    double deadline;         /* monotonic seconds; NaN: no deadline */
    char started, closed, have_event;
    char running;            /* in next()/close(): atomic exchange, so two
                                threads never run one iterator at once */
} ascompleted;

#define AC_FROM_MW(mwp) \
    ((ascompleted *)((char *)(mwp) - offsetof(ascompleted, mw)))

static void
ac_on_done(multiwait *mw, Py_ssize_t i, int how)
{
    ascompleted *it = AC_FROM_MW(mw);
    cf_spin_lock(&mw->lock);
    if (it->q_tail < mw->n) {
        it->queue[it->q_tail++] = i;
        /* Inside the lock: a next() that cleared the event and then reads
         * q_tail either sees this item or is woken again. */
        cf_event_set(&mw->ev);
    }
    cf_spin_unlock(&mw->lock);
}

/* The next batch: what finished until now.  Clear the event first, so a
 * later completion sets it again. */
static void
ac_take_batch(ascompleted *it)
{
    cf_event_clear(&it->mw.ev);
    cf_spin_lock(&it->mw.lock);
    it->batch_end = it->q_tail;
    cf_spin_unlock(&it->mw.lock);
}

static double
monotonic_s(void)
{
    return (double)cf_monotonic_ns() / 1e9;
}

/* end_time = timeout + time.monotonic(), as the stdlib computes it. */
static int
ac_parse_deadline(ascompleted *it)
{
    PyObject *timeout = it->timeout;
    it->deadline = NAN;
    if (timeout == NULL || timeout == Py_None) {
        return 0;
    }
    double now = monotonic_s();
    double end;
    if (PyFloat_Check(timeout) || PyLong_Check(timeout)) {
        double secs = PyFloat_AsDouble(timeout);
        if (secs == -1.0 && PyErr_Occurred()) {
            return -1;
        }
        end = secs + now;
    }
    else {
        PyObject *pnow = PyFloat_FromDouble(now);
        if (pnow == NULL) {
            return -1;
        }
        /* Whatever `timeout + time.monotonic()` does, errors included. */
        PyObject *sum = PyNumber_Add(timeout, pnow);
        Py_DECREF(pnow);
        if (sum == NULL) {
            return -1;
        }
        end = PyFloat_AsDouble(sum);
        Py_DECREF(sum);
        if (end == -1.0 && PyErr_Occurred()) {
            return -1;
        }
    }
    /* A NaN end time never passes: the stdlib then polls until every
     * future is done, and never times out; we wait for them likewise,
     * without the busy loop.  NaN is also our "no deadline". */
    it->deadline = end;
    return 0;
}

static int
ac_start(ascompleted *it)
{
    it->started = 1;
    if (ac_parse_deadline(it) < 0) {
        return -1;
    }
    PyObject *fs = PySet_New(it->fs);
    Py_CLEAR(it->fs);
    if (fs == NULL) {
        return -1;
    }
    int rc = mw_fill(&it->mw, fs, 1, FILL_SNAPSHOT);
    Py_DECREF(fs);
    if (rc < 0) {
        return -1;
    }
    Py_ssize_t n = it->mw.n, i;
    if (n > 0) {
        it->queue = PyMem_Malloc(n * sizeof(Py_ssize_t));
        if (it->queue == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    it->total = n;
    for (i = 0; i < n; i++) {
        /* as_completed() does not ask how a future ended. */
        int d = mw_install(&it->mw, i, NULL);
        if (d < 0) {
            return -1;
        }
        if (d) {
            ac_on_done(&it->mw, i, HOW_RESULT);
        }
    }
    /* The first batch: what was done when we looked. */
    ac_take_batch(it);
    return 0;
}

/* Uninstall from every future not yielded yet and drop them. */
static int
ac_close_impl(ascompleted *it)
{
    if (it->closed) {
        return 0;
    }
    it->closed = 1;
    Py_CLEAR(it->fs);
    Py_CLEAR(it->timeout);
    int rc = mw_uninstall_all(&it->mw);
    for (Py_ssize_t i = 0; i < it->mw.n; i++) {
        Py_CLEAR(it->mw.items[i]);
    }
    return rc;
}

static PyObject *
ac_next(ascompleted *it)
{
    if (cf_exchange(&it->running, 1)) {
        PyErr_SetString(PyExc_ValueError, "generator already executing");
        return NULL;
    }
    if (it->closed) {
        cf_store_release(&it->running, 0);
        return NULL;
    }
    Py_INCREF(it);
    PyObject *f = NULL;
    if (!it->started && ac_start(it) < 0) {
        goto fail;
    }
    for (;;) {
        if (it->q_head < it->batch_end) {
            Py_ssize_t i = it->queue[it->q_head++];
            /* Out of the waiters first, as _yield_finished_futures does;
             * our reference goes to the caller. */
            int rc = mw_uninstall(&it->mw, i);
            f = it->mw.items[i];
            it->mw.items[i] = NULL;
            if (rc < 0) {
                Py_DECREF(f);
                f = NULL;
                goto fail;
            }
            it->yielded++;
            goto done;
        }
        if (it->yielded == it->total) {
            /* Exhausted: StopIteration. */
            if (ac_close_impl(it) < 0) {
                goto fail;
            }
            goto done;
        }
        int64_t ns = -1;
        if (it->deadline == it->deadline) {
            double left = it->deadline - monotonic_s();
            if (left <= 0) {
                PyErr_Format(it->mw.st->TimeoutError,
                             "%zd (of %zd) futures unfinished",
                             it->total - it->yielded, it->total);
                goto fail;
            }
            if (cf_parse_timeout_seconds(left, &ns) < 0) {
                goto fail;
            }
        }
        else if (it->timeout != NULL && it->timeout != Py_None) {
            /* A NaN end time: from 3.14 the wait rejects it (ValueError);
             * before, the stdlib polls until every future is done, which
             * waiting without a deadline does without the busy loop. */
            if (cf_parse_timeout_seconds(NAN, &ns) < 0) {
                goto fail;
            }
            ns = -1;
        }
        if (cf_event_wait(&it->mw.ev, ns) < 0) {
            goto fail;
        }
        ac_take_batch(it);
    }

fail:
    /* As a generator that raised: finished, its waiters removed. */
    {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (ac_close_impl(it) < 0) {
            PyErr_WriteUnraisable((PyObject *)it);
        }
        PyErr_Restore(type, value, tb);
    }
done:
    cf_store_release(&it->running, 0);
    Py_DECREF(it);
    return f;
}

static PyObject *
ac_close(ascompleted *it, PyObject *unused)
{
    if (cf_exchange(&it->running, 1)) {
        PyErr_SetString(PyExc_ValueError, "generator already executing");
        return NULL;
    }
    int rc = ac_close_impl(it);
    cf_store_release(&it->running, 0);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static void
ac_finalize(ascompleted *it)
{
    if (it->closed || cf_exchange(&it->running, 1)) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (ac_close_impl(it) < 0) {
        PyErr_WriteUnraisable((PyObject *)it);
    }
    cf_store_release(&it->running, 0);
    PyErr_Restore(type, value, tb);
}

static int
ac_traverse(ascompleted *it, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(it));
    Py_VISIT(it->fs);
    Py_VISIT(it->timeout);
    for (Py_ssize_t i = 0; i < it->mw.n; i++) {
        Py_VISIT(it->mw.items[i]);
    }
    return 0;
}

static int
ac_clear(ascompleted *it)
{
    /* tp_finalize has removed the waiters already; this only breaks
     * cycles, without calling Python. */
    it->closed = 1;
    Py_CLEAR(it->fs);
    Py_CLEAR(it->timeout);
    mw_detach_all(&it->mw);
    for (Py_ssize_t i = 0; i < it->mw.n; i++) {
        Py_CLEAR(it->mw.items[i]);
    }
    return 0;
}

static void
ac_dealloc(ascompleted *it)
{
    PyTypeObject *tp = Py_TYPE(it);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)it) < 0) {
        return;     /* resurrected */
    }
    PyObject_GC_UnTrack(it);
    ac_clear(it);
    mw_free(&it->mw);
    PyMem_Free(it->queue);
    if (it->have_event) {
        cf_event_fini(&it->mw.ev);
    }
    tp->tp_free((PyObject *)it);
    Py_DECREF(tp);
}

static PyObject *
cf_as_completed(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
                PyObject *kwnames)
{
    static const char *const names[] = {"fs", "timeout"};
    cf_state *st = cf_get_state(module);
    PyObject *argv[2];
    if (cf_bind_args("as_completed", names, 1, 2, 0, args, nargs, kwnames,
                     argv) < 0) {
        return NULL;
    }
    ascompleted *it = PyObject_GC_New(ascompleted, st->aswaiter_type);
    if (it == NULL) {
        return NULL;
    }
    mw_init(&it->mw, st, ac_on_done);
    it->fs = Py_NewRef(argv[0]);
    it->timeout = Py_XNewRef(argv[1]);
    it->queue = NULL;
    it->q_head = it->q_tail = it->batch_end = 0;
    it->total = it->yielded = 0;
    it->deadline = NAN;
    it->started = it->running = it->closed = it->have_event = 0;
    if (cf_event_init(&it->mw.ev) < 0) {
        Py_DECREF(it);
        return NULL;
    }
    it->have_event = 1;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

static PyMethodDef ac_methods[] = {
    {"close", (PyCFunction)ac_close, METH_NOARGS,
     "close($self, /)\n--\n\n"
     "Stop waiting: remove this iterator from the futures it waits on."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot ac_slots[] = {
    {Py_tp_doc, "Iterator over futures as they complete; see "
                "cfutures.as_completed()."},
    {Py_tp_dealloc, ac_dealloc},
    {Py_tp_finalize, ac_finalize},
    {Py_tp_traverse, ac_traverse},
    {Py_tp_clear, ac_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, ac_next},
    {Py_tp_methods, ac_methods},
    {0, NULL},
};

static PyType_Spec ac_spec = {
    .name = "cfutures._cfutures.as_completed_iterator",
    .basicsize = sizeof(ascompleted),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = ac_slots,
};

/* ---- module functions --------------------------------------------------- */

PyDoc_STRVAR(wait_doc,
"wait($module, /, fs, timeout=None, return_when='ALL_COMPLETED')\n--\n\n"
"Wait for the futures in the given sequence to complete.\n\n"
"Args:\n"
"    fs: The sequence of Futures (possibly created by different Executors) to\n"
"        wait upon: cfutures futures and any concurrent.futures.Future.\n"
"    timeout: The maximum number of seconds to wait. If None, then there\n"
"        is no limit on the wait time.\n"
"    return_when: Indicates when this function should return. The options\n"
"        are:\n\n"
"        FIRST_COMPLETED - Return when any future finishes or is\n"
"                          cancelled.\n"
"        FIRST_EXCEPTION - Return when any future finishes by raising an\n"
"                          exception. If no future raises an exception\n"
"                          then it is equivalent to ALL_COMPLETED.\n"
"        ALL_COMPLETED -   Return when all futures finish or are cancelled.\n\n"
"Returns:\n"
"    A named 2-tuple of sets (concurrent.futures' DoneAndNotDoneFutures).\n"
"    The first set, named 'done', contains the futures that completed (is\n"
"    finished or cancelled) before the wait completed. The second set,\n"
"    named 'not_done', contains uncompleted futures. Duplicate futures\n"
"    given to *fs* are removed and will be returned only once.");

PyDoc_STRVAR(as_completed_doc,
"as_completed($module, /, fs, timeout=None)\n--\n\n"
"An iterator over the given futures that yields each as it completes.\n\n"
"Args:\n"
"    fs: The sequence of Futures (possibly created by different Executors) to\n"
"        iterate over: cfutures futures and any concurrent.futures.Future.\n"
"    timeout: The maximum number of seconds to wait. If None, then there\n"
"        is no limit on the wait time.\n\n"
"Returns:\n"
"    An iterator that yields the given Futures as they complete (finished or\n"
"    cancelled), first those already done. If any given Futures are\n"
"    duplicated, they will be returned once.  As with the stdlib's\n"
"    generator, fs is read and the timeout starts at the first next().\n\n"
"Raises:\n"
"    TimeoutError: If the entire result iterator could not be generated\n"
"        before the given timeout.");

static PyMethodDef wait_functions[] = {
    {"wait", (PyCFunction)(void (*)(void))cf_wait,
     METH_FASTCALL | METH_KEYWORDS, wait_doc},
    {"as_completed", (PyCFunction)(void (*)(void))cf_as_completed,
     METH_FASTCALL | METH_KEYWORDS, as_completed_doc},
    {NULL, NULL, 0, NULL},
};

int
cf_wait_setup(PyObject *module, cf_state *st)
{
#define INTERN(field, text)                                         \
    do {                                                            \
        if ((st->field = PyUnicode_InternFromString(text)) == NULL) \
            return -1;                                              \
    } while (0)
    INTERN(str__condition, "_condition");
    INTERN(str__state, "_state");
    INTERN(str__waiters, "_waiters");
    INTERN(str__exception, "_exception");
    INTERN(str_acquire, "acquire");
    INTERN(str_release, "release");
    INTERN(str_append, "append");
    INTERN(str_remove, "remove");
    INTERN(str_cancelled, "cancelled");
    INTERN(str_exception, "exception");
#undef INTERN
    st->waiter_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &waiter_spec, NULL);
    if (st->waiter_type == NULL) {
        return -1;
    }
    st->aswaiter_type = (PyTypeObject *)PyType_FromModuleAndSpec(
        module, &ac_spec, NULL);
    if (st->aswaiter_type == NULL) {
        return -1;
    }
    return PyModule_AddFunctions(module, wait_functions);
}
