import torch, hmmlib
from hmmlib import bruteforce as bf
for seed in range(5):
    for K,V,T in [(3,4,5),(4,3,6),(2,2,1)]:
        h = hmmlib.dirichlet_hmm(K,V,seed=seed, transition_concentration=0.5)
        x,s = hmmlib.sample(h, 3, T, seed=seed)
        post = hmmlib.posterior_marginals(h, x)
        for b in range(3):
            assert torch.allclose(post[b], bf.brute_posteriors(h, x[b]), atol=1e-12, rtol=0), (post[b], bf.brute_posteriors(h,x[b]))
            assert abs(hmmlib.log_likelihood(h, x)[b] - bf.brute_log_likelihood(h, x[b])) < 1e-10
            assert torch.allclose(hmmlib.posterior_h0(h, x)[b], bf.brute_h0_posterior(h, x[b]), atol=1e-12)
            assert torch.allclose(hmmlib.masked_token_conditionals(h, x)[b], bf.brute_masked_token_conditionals(h, x[b]), atol=1e-12)
            assert torch.allclose(hmmlib.next_token_conditionals(h, x)[b], bf.brute_next_token_conditionals(h, x[b]), atol=1e-12)
            p, lp = hmmlib.viterbi(h, x)
            bp, blp = bf.brute_viterbi(h, x[b])
            assert abs(lp[b]-blp) < 1e-10
print("ok")
