"""The evidence: experiments made of trials (compare, rank_check, calibrate, discriminator_compare), their
statistics, records and reports. The top library layer: it may use everything below, nothing below uses it."""
