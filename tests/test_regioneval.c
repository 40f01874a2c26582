/* test_regioneval.c: the region metrics' tie rule (region_rank). A class is within the top k
 * only if fewer than k OTHER classes score at least as high as it does, so a region whose
 * feature vanished (all logits 0: every class ties) is never counted right, whatever its
 * class index; and region_macc's per-class mean with the reference's float16 rounding. */
#include <math.h>

#include "method/regioneval.h"
#include "testutil.h"

static void rank_is(const char *name, const float *logits, int K, int y, int want) {
    int got = region_rank(logits, K, y);
    char detail[96];
    snprintf(detail, sizeof detail, "rank %d, want %d", got, want);
    tu_check(got == want, name, detail);
}

static void test_rank(void) {
    const float distinct[6] = {0.1f, 0.9f, -0.2f, 0.5f, 0.3f, 0.0f};
    rank_is("distinct: the best class has rank 0", distinct, 6, 1, 0);
    rank_is("distinct: rank = number of classes above", distinct, 6, 4, 2);
    rank_is("distinct: the worst class has rank K-1", distinct, 6, 2, 5);
    const float zeros[10] = {0};
    /* the old rule (lower index wins ties) gave class 0 rank 0 here: a vanished mask right */
    rank_is("all tie (vanished feature), class 0: rank K-1", zeros, 10, 0, 9);
    rank_is("all tie (vanished feature), class 9: rank K-1", zeros, 10, 9, 9);
    const float pair[5] = {0.2f, 0.7f, 0.7f, 0.1f, 0.0f};
    rank_is("tied for first with one other, lower index: rank 1 (not top-1)", pair, 5, 1, 1);
    rank_is("tied for first with one other, higher index: rank 1", pair, 5, 2, 1);
    const float nan_y[4] = {0.1f, NAN, 0.2f, 0.3f};
    rank_is("a NaN score for the true class: rank K-1", nan_y, 4, 1, 3);
    const float neg0[3] = {-0.0f, 0.0f, -1.0f};
    rank_is("-0 and +0 tie", neg0, 3, 0, 1);
}

static void test_macc(void) {
    CocoCategory cs[3] = {{.id = 1, .isthing = 1}, {.id = 2, .isthing = 1}, {.id = 3, .isthing = 0}};
    CocoCategories cats = {.cats = cs, .num = 3, .num_things = 2};
    RegionCounts rc;
    CS_DIE_IF_FAIL(region_counts_init(&rc, 3));
    rc.count[0] = 3, rc.count[1] = 0, rc.count[2] = 4;
    rc.top1[EVAL_ROIS * 3 + 0] = 1, rc.top5[EVAL_ROIS * 3 + 0] = 3;
    rc.top1[EVAL_ROIS * 3 + 2] = 2, rc.top5[EVAL_ROIS * 3 + 2] = 4;
    double macc[EVAL_METHODS][2][2];
    region_macc(&rc, &cats, macc);
    /* thing: class 1 alone (class 2 has no samples), 1/3 rounded to float16 as the reference */
    tu_check(macc[EVAL_ROIS][0][0] == (double)(_Float16)(1.0f / 3.0f), "macc: thing top-1 = "
             "float16(1/3), classes without samples left out", NULL);
    tu_check(macc[EVAL_ROIS][0][1] == 1.0 && macc[EVAL_ROIS][1][0] == 0.5 &&
                 macc[EVAL_ROIS][1][1] == 1.0, "macc: thing top-5, stuff top-1 and top-5", NULL);
    region_counts_free(&rc);
}

int main(int argc, char **argv) {
    (void)argc;
    test_rank();
    test_macc();
    return tu_finish(argv[0]);
}
