OPENQASM 3.0;
include "stdgates.inc";
qubit[4] q;
ccx q[3], q[1], q[0];
ccx q[0], q[2], q[1];
ccx q[1], q[3], q[2];
ccx q[2], q[0], q[3];

