/* Input of the gcc_cc1 trace (gcc -O2 -c): a word-frequency table, a merge sort and a small expression
   evaluator, enough code for the optimiser to allocate in earnest. Written for dreamalloc; never run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>

struct entry { char *word; unsigned count; struct entry *next; };
struct table { struct entry **slot; size_t size, used; };

static unsigned long hash(const char *s) {
    unsigned long h = 5381;
    while (*s) h = h * 33 + (unsigned char)*s++;
    return h;
}

static void grow(struct table *t) {
    size_t n = t->size ? t->size * 2 : 64;
    struct entry **slot = calloc(n, sizeof *slot);
    for (size_t i = 0; i < t->size; i++)
        for (struct entry *e = t->slot[i], *next; e; e = next) {
            next = e->next;
            size_t k = hash(e->word) % n;
            e->next = slot[k];
            slot[k] = e;
        }
    free(t->slot);
    t->slot = slot;
    t->size = n;
}

static void add(struct table *t, const char *w) {
    if (t->used * 4 >= t->size * 3) grow(t);
    size_t k = hash(w) % t->size;
    for (struct entry *e = t->slot[k]; e; e = e->next)
        if (!strcmp(e->word, w)) { e->count++; return; }
    struct entry *e = malloc(sizeof *e);
    e->word = strdup(w);
    e->count = 1;
    e->next = t->slot[k];
    t->slot[k] = e;
    t->used++;
}

static int before(const struct entry *a, const struct entry *b) {
    return a->count != b->count ? a->count > b->count : strcmp(a->word, b->word) < 0;
}

static void merge_sort(struct entry **a, struct entry **tmp, size_t n) {
    if (n < 2) return;
    size_t h = n / 2, i = 0, j = h, k = 0;
    merge_sort(a, tmp, h);
    merge_sort(a + h, tmp, n - h);
    while (i < h && j < n) tmp[k++] = before(a[j], a[i]) ? a[j++] : a[i++];
    while (i < h) tmp[k++] = a[i++];
    while (j < n) tmp[k++] = a[j++];
    memcpy(a, tmp, n * sizeof *a);
}

static const char *p;
static double expr(void);
static double atom(void) {
    while (*p == ' ') p++;
    if (*p == '(') { p++; double v = expr(); if (*p == ')') p++; return v; }
    if (*p == '-') { p++; return -atom(); }
    return strtod(p, (char **)&p);
}
static double term(void) {
    double v = atom();
    for (;;) {
        while (*p == ' ') p++;
        if (*p == '*') { p++; v *= atom(); }
        else if (*p == '/') { p++; double d = atom(); v = d != 0 ? v / d : 0; }
        else return v;
    }
}
static double expr(void) {
    double v = term();
    for (;;) {
        while (*p == ' ') p++;
        if (*p == '+') { p++; v += term(); }
        else if (*p == '-') { p++; v -= term(); }
        else return v;
    }
}

int main(int argc, char **argv) {
    struct table t = {0};
    char buf[256];
    size_t n = 0;
    int c;
    while ((c = getchar()) != EOF) {
        if (isalnum(c) && n + 1 < sizeof buf) buf[n++] = (char)tolower(c);
        else if (n) { buf[n] = 0; add(&t, buf); n = 0; }
    }
    struct entry **all = malloc(t.used * sizeof *all), **tmp = malloc(t.used * sizeof *tmp);
    size_t m = 0;
    for (size_t i = 0; i < t.size; i++)
        for (struct entry *e = t.slot[i]; e; e = e->next) all[m++] = e;
    merge_sort(all, tmp, m);
    for (size_t i = 0; i < m && i < 20; i++) printf("%7u %s\n", all[i]->count, all[i]->word);
    for (int i = 1; i < argc; i++) { p = argv[i]; printf("%s = %g\n", argv[i], expr()); }
    return 0;
}
