// A device for the interop tests made with KAIT's `echonet-lite` package (npm, 2.16.2): the objects and
// property values given as JSON, served by that library's own Get/Set handling.
//
//   node kait_device.js ADDRESS DETAILS.json
//
// The library binds 0.0.0.0:3610, which would take port 3610 from every loopback address the tests
// give their own nodes and controllers; here it binds ADDRESS only (and joins the multicast group there).
// It sends from ADDRESS:23610 and answers to port 3610, as the protocol says.  "ready" on stdout once
// it listens.
'use strict';
const dgram = require('dgram');
const fs = require('fs');

const address = process.argv[2];
const details = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));

const bind = dgram.Socket.prototype.bind;
dgram.Socket.prototype.bind = function (options, ...rest) {
  if (options && typeof options === 'object' && options.address === '0.0.0.0') {
    options = Object.assign({}, options, { address });
  }
  return bind.call(this, options, ...rest);
};
const addMembership = dgram.Socket.prototype.addMembership;
dgram.Socket.prototype.addMembership = function (group) {
  try {
    return addMembership.call(this, group, address);
  } catch (err) {
    return undefined; // a node bound to one address needs no group to answer unicast requests
  }
};

const EL = require('echonet-lite');

EL.initialize(
  Object.keys(details),
  (rinfo, els, err) => {
    if (err || !els || els.DEOJ.substr(0, 4) === '0ef0') return; // the library serves the node profile
    if (els.ESV === EL.GET) EL.replyGetDetail(rinfo, els, details);
    else if (els.ESV === EL.SETC || els.ESV === EL.SETI) EL.replySetDetail(rinfo, els, details);
  },
  4,
  { v4: address, ignoreMe: true, autoGetProperties: false, debugMode: false },
).then(() => {
  // the receiving socket is bound asynchronously; answer "ready" once it is
  const wait = () => (EL.sock4 && EL.sock4.address ? console.log('ready') : setTimeout(wait, 20));
  setTimeout(wait, 50);
});
process.on('SIGTERM', () => process.exit(0));
