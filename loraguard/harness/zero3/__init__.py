"""DeepSpeed ZeRO-3 machinery: gathering partitioned parameters, training recipes, and a correct merged export."""
