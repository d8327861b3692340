#!/usr/bin/env python3
"""CPU check of the flash kernels' fragment plumbing (kernels/attention_flash.cu, attention_wide.cu).

Emulates one warp's ldmatrix (.x4/.x2, .trans) and mma.sync (m16n8k16, m16n8k8) with the register
layouts of the PTX ISA, drives them with the kernels' own lane-address formulas (ld_row16,
ld_col8, kb_row16, kb_col8, the k8 tail, the odd fifth n8 tile), and checks that S = q·kᵀ and
O = P·V come out right for head dims 40/64/80/160/512, key tiles 32/64/80 and 1 or 2 m16 tiles per
warp; that the padding columns of shared-memory rows (filled with NaN here) are never read; that
the epilogue writes each output element once; and that the 8 row addresses of every ldmatrix hit
8 different 16-byte bank groups. It checks index math, not the hardware: run the GPU tests for
that. Needs numpy (e.g. the golden venv): python bench/gpu/attention_fragments.py
"""
import numpy as np
rng=np.random.default_rng(0)

def ldsm(smem, addrs, nmat, trans=False):
    # addrs: list of 32 (row, col); matrix i uses lanes 8i..8i+7 as its row addresses
    regs=[]
    for i in range(nmat):
        M=np.stack([smem[addrs[8*i+r][0], addrs[8*i+r][1]:addrs[8*i+r][1]+8] for r in range(8)])
        reg=[]
        for lane in range(32):
            g,t=lane//4,lane%4
            if not trans: reg.append((M[g,2*t],M[g,2*t+1]))
            else: reg.append((M[2*t,g],M[2*t+1,g]))
        regs.append(reg)
    return regs  # regs[i][lane] = (lo, hi)

def A_from(a):  # a: 4 regs (lists over lanes) → 16x16
    A=np.zeros((16,16))
    for lane in range(32):
        g,t=lane//4,lane%4
        A[g,2*t:2*t+2]=a[0][lane]; A[g+8,2*t:2*t+2]=a[1][lane]
        A[g,2*t+8:2*t+10]=a[2][lane]; A[g+8,2*t+8:2*t+10]=a[3][lane]
    return A
def A8_from(a):
    A=np.zeros((16,8))
    for lane in range(32):
        g,t=lane//4,lane%4
        A[g,2*t:2*t+2]=a[0][lane]; A[g+8,2*t:2*t+2]=a[1][lane]
    return A
def B_from(b0,b1=None):
    K=16 if b1 is not None else 8
    B=np.zeros((K,8))
    for lane in range(32):
        g,t=lane//4,lane%4
        B[2*t:2*t+2,g]=b0[lane]
        if b1 is not None: B[2*t+8:2*t+10,g]=b1[lane]
    return B
def C_get(c):  # c: [32][4] → 16x8
    C=np.zeros((16,8))
    for lane in range(32):
        g,t=lane//4,lane%4
        C[g,2*t],C[g,2*t+1],C[g+8,2*t],C[g+8,2*t+1]=c[lane]
    return C
def C_put(C):
    return [[C[l//4,2*(l%4)],C[l//4,2*(l%4)+1],C[l//4+8,2*(l%4)],C[l//4+8,2*(l%4)+1]] for l in range(32)]
def mma(c,a,b0,b1=None):
    A=A_from(a) if len(a)==4 else A8_from(a)
    return C_put(C_get(c)+A@B_from(b0,b1))

def lds(d): return d+8 if (d//8)%2==0 else d

def run(D,BK,MT=1):
    LDS=lds(D); D16=D//16; TAIL=D%16!=0; DN8=D//8; KN8=BK//8; KK16=BK//16
    rows=16*MT
    sQ=np.zeros((rows,LDS)); sK=np.zeros((BK,LDS)); sV=np.zeros((BK,LDS))
    Q=rng.standard_normal((rows,D)); K=rng.standard_normal((BK,D)); V=rng.standard_normal((BK,D))
    sQ[:,:D]=Q; sK[:,:D]=K; sV[:,:D]=V
    sQ[:,D:]=np.nan; sK[:,D:]=np.nan; sV[:,D:]=np.nan  # padding must never be read
    lanes=range(32)
    ld_row16=[(l&7)+(((l>>3)&1)<<3) for l in lanes]; ld_col8=[(l>>4)<<3 for l in lanes]
    kb_row16=[(l&7)+((l>>4)<<3) for l in lanes]; kb_col8=[((l>>3)&1)<<3 for l in lanes]
    S=[[[[0.0]*4 for _ in lanes] for n in range(KN8)] for mt in range(MT)]
    for kk in range(D16):
        qa=[ldsm(sQ,[(mt*16+ld_row16[l], kk*16+ld_col8[l]) for l in lanes],4) for mt in range(MT)]
        for p in range(KN8//2):
            kb=ldsm(sK,[(p*16+kb_row16[l], kk*16+kb_col8[l]) for l in lanes],4)
            for mt in range(MT):
                S[mt][2*p]=mma(S[mt][2*p],qa[mt],kb[0],kb[1]); S[mt][2*p+1]=mma(S[mt][2*p+1],qa[mt],kb[2],kb[3])
    if TAIL:
        qa=[ldsm(sQ,[(mt*16+ld_row16[l], D16*16) for l in lanes],2) for mt in range(MT)]
        for p in range(KN8//4):
            kb=ldsm(sK,[(p*32+l, D16*16) for l in lanes],4)
            for mt in range(MT):
                for i in range(4): S[mt][4*p+i]=mma(S[mt][4*p+i],qa[mt],kb[i])
        if KN8%4:
            n0=KN8//4*4
            kb=ldsm(sK,[(n0*8+(l&15), D16*16) for l in lanes],2)
            for mt in range(MT):
                S[mt][n0]=mma(S[mt][n0],qa[mt],kb[0]); S[mt][n0+1]=mma(S[mt][n0+1],qa[mt],kb[1])
    Sfull=np.concatenate([np.concatenate([C_get(S[mt][n]) for n in range(KN8)],axis=1) for mt in range(MT)],axis=0)
    assert np.allclose(Sfull,Q@K.T), ('S mismatch',D,BK)
    # P = some function of S, kept in the C-fragment registers
    P=[[ [[np.tanh(x) for x in S[mt][n][l]] for l in lanes] for n in range(KN8)] for mt in range(MT)]
    O=[[[[0.0]*4 for _ in lanes] for n in range(DN8)] for mt in range(MT)]
    for kk in range(KK16):
        pa=[[[ (P[mt][2*kk][l][0],P[mt][2*kk][l][1]) for l in lanes],
             [ (P[mt][2*kk][l][2],P[mt][2*kk][l][3]) for l in lanes],
             [ (P[mt][2*kk+1][l][0],P[mt][2*kk+1][l][1]) for l in lanes],
             [ (P[mt][2*kk+1][l][2],P[mt][2*kk+1][l][3]) for l in lanes]] for mt in range(MT)]
        for p in range(DN8//2):
            vb=ldsm(sV,[(kk*16+ld_row16[l], p*16+ld_col8[l]) for l in lanes],4,trans=True)
            for mt in range(MT):
                O[mt][2*p]=mma(O[mt][2*p],pa[mt],vb[0],vb[1]); O[mt][2*p+1]=mma(O[mt][2*p+1],pa[mt],vb[2],vb[3])
        if DN8%2:
            vb=ldsm(sV,[(kk*16+ld_row16[l], (DN8-1)*8) for l in lanes],2,trans=True)
            for mt in range(MT): O[mt][DN8-1]=mma(O[mt][DN8-1],pa[mt],vb[0],vb[1])
    Ofull=np.concatenate([np.concatenate([C_get(O[mt][n]) for n in range(DN8)],axis=1) for mt in range(MT)],axis=0)
    assert np.allclose(Ofull,np.tanh(Q@K.T)@V), ('O mismatch',D,BK)
    # epilogue: lane writes row g (+8), cols n*8+2t → check coverage
    cover=np.zeros((rows,D),int)
    for mt in range(MT):
        for h in range(2):
            for l in lanes:
                for n in range(DN8):
                    r=mt*16+l//4+8*h; c=n*8+2*(l&3); cover[r,c]+=1; cover[r,c+1]+=1
    assert (cover==1).all()
    # bank-conflict check for ldmatrix phases: 8 row addresses per matrix → distinct 16B bank groups
    for base_rows in [ld_row16,kb_row16]:
        for i in range(4):
            banks={((base_rows[8*i+r])*LDS*2//16)%8 for r in range(8)}
            assert len(banks)==8,(D,'bank conflict')
    print('ok D=%d BK=%d MT=%d'%(D,BK,MT))

for D in (40,64,80,160,512):
    for BK in (32,64,80):
        for MT in (1,2):
            if D==512 and MT==2: continue
            run(D,BK,MT)
