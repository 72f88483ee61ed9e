OPENQASM 3.0;
include "stdgates.inc";
input float[64] _x_0_;
input float[64] _x_1_;
input float[64] _x_2_;
input float[64] _x_3_;
qubit[4] q;
h q[0];
ry(_x_0_) q[0];
h q[1];
ry(_x_1_) q[1];
h q[2];
ry(_x_2_) q[2];
h q[3];
ry(_x_3_) q[3];

