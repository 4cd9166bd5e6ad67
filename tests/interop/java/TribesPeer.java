/*
 * TribesPeer: a tiny command-line Apache Tribes member, built against the real Tomcat Tribes jar
 * (Debian's libtomcat10-java), used by tests/interop to check that the `tribes` package
 * interoperates with Tomcat on the wire.
 *
 * Loopback only: the multicast socket is bound to 127.0.0.1 with TTL 0 and the NIO receiver listens
 * on 127.0.0.1, so no packet leaves the machine.
 *
 * Usage:
 *   java -cp tomcat10-tribes.jar:tomcat10-juli.jar:<classdir> TribesPeer --mcast-port P
 *        [--mcast-address 228.0.0.4] [--receiver-port 4000] [--frequency 100] [--drop-time 1000]
 *        [--max-seconds 120] [--interceptors dispatch,tfd] [--encrypt-key HEX]
 *
 * Interceptor stack (--interceptors, comma separated, sending order; "none" for an empty list):
 *   dispatch = MessageDispatchInterceptor, tfd = TcpFailureDetector.
 *   The default "dispatch,tfd" is the stack SimpleTcpCluster builds by default in real Tomcat
 *   (MessageDispatchInterceptor above TcpFailureDetector). Note that with "tfd" the Java side only
 *   reports a peer as ADDED after a successful TCP probe of the peer's receiver (TcpFailureDetector
 *   opens a connection and writes one framed ChannelData carrying the 64-byte TCP_FAIL_DETECT magic,
 *   without USE_ACK), and a member that simply expires is probed before it is reported GONE.
 *   With "none", GroupChannel itself adds a MessageDispatchInterceptor at start.
 *   encrypt = EncryptInterceptor (only valid together with --encrypt-key).
 *
 * Encryption (--encrypt-key HEX): adds Tomcat's EncryptInterceptor configured as in server.xml
 *   (setEncryptionAlgorithm("AES/GCM/NoPadding"), setEncryptionKey(hex string; 32/48/64 hex digits =
 *   AES-128/192/256); replay window left at its defaults, 10000 ms / 8192 messages). Unless the
 *   --interceptors list names "encrypt" explicitly, it is inserted just before the first "tfd" (the
 *   EncryptInterceptor must be upstream of TcpFailureDetector, or channel start fails), or appended at
 *   the end of the list when there is no "tfd" (default stack -> dispatch,encrypt,tfd). Membership
 *   heartbeats and TcpFailureDetector's probe stay in plaintext, as in Tomcat. A message that fails
 *   to decrypt is dropped by the interceptor, which logs on stderr through JULI
 *   ("Failed to decrypt message" with the cause, e.g. javax.crypto.AEADBadTagException); the receiver
 *   still ACKs it, so the sender reports SENT.
 *
 * Output (stdout, one line per event, flushed):
 *   READY <host>:<port> <uniqueId hex>          after the channel started
 *   ADDED <host>:<port> <uniqueId hex>          membership listener
 *   GONE <host>:<port> <uniqueId hex>           membership listener
 *   MSG <host>:<port> <hex of bytes>            a ByteMessage was received (empty payload: "MSG h:p -")
 *   OBJ <host>:<port> <class name>              any other object was received
 *   SENT <n members>                            reply to SEND/SENDSYNC/SENDASYNC
 *   SENDFAIL <message>                          reply to SEND/SENDSYNC/SENDASYNC when send() threw
 *   MEMBERS <count> [<host:port>,...]           reply to MEMBERS (list omitted when count is 0)
 *   ERR <message>                               unknown or malformed command
 *   BYE                                         the channel was stopped (QUIT or EOF), exit status 0 follows
 *   STARTFAIL <message>                         channel start threw (stack trace on stderr), exit status 2
 *                                               follows (e.g. EncryptInterceptor below TcpFailureDetector)
 *   TIMEOUT                                     --max-seconds elapsed, exit status 3 follows
 *
 * Commands (stdin, one per line):
 *   SEND <hex>        ByteMessage to all current members, Channel.SEND_OPTIONS_USE_ACK
 *   SENDSYNC <hex>    same with USE_ACK | SYNCHRONIZED_ACK
 *   SENDASYNC <hex>   same with ASYNCHRONOUS (queued by MessageDispatchInterceptor, no ACK)
 *   MEMBERS           list the current members
 *   QUIT              stop the channel (the membership service sends its BABY-ALEX shutdown
 *                     heartbeat) and exit 0; EOF on stdin does the same
 */

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.Serializable;
import java.net.InetAddress;
import java.net.UnknownHostException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import org.apache.catalina.tribes.ByteMessage;
import org.apache.catalina.tribes.Channel;
import org.apache.catalina.tribes.ChannelException;
import org.apache.catalina.tribes.ChannelListener;
import org.apache.catalina.tribes.Member;
import org.apache.catalina.tribes.MembershipListener;
import org.apache.catalina.tribes.group.GroupChannel;
import org.apache.catalina.tribes.group.interceptors.EncryptInterceptor;
import org.apache.catalina.tribes.group.interceptors.MessageDispatchInterceptor;
import org.apache.catalina.tribes.group.interceptors.TcpFailureDetector;
import org.apache.catalina.tribes.membership.McastService;
import org.apache.catalina.tribes.transport.nio.NioReceiver;

public final class TribesPeer {

    private static final String LOOPBACK = "127.0.0.1";
    private static final PrintStream OUT =
            new PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), false, StandardCharsets.UTF_8);
    private static final char[] HEX = "0123456789abcdef".toCharArray();

    private static GroupChannel channel;
    private static volatile boolean stopping = false;

    private TribesPeer() {
    }

    /** Print one line and flush; serialized so lines from different threads never interleave. */
    static synchronized void out(String line) {
        OUT.print(line);
        OUT.print('\n');
        OUT.flush();
    }

    static String hex(byte[] b) {
        if (b == null) {
            return "";
        }
        char[] c = new char[b.length * 2];
        for (int i = 0; i < b.length; i++) {
            c[2 * i] = HEX[(b[i] >> 4) & 0xf];
            c[2 * i + 1] = HEX[b[i] & 0xf];
        }
        return new String(c);
    }

    static byte[] unhex(String s) {
        s = s.trim();
        if (s.length() % 2 != 0) {
            throw new IllegalArgumentException("odd number of hex digits");
        }
        byte[] b = new byte[s.length() / 2];
        for (int i = 0; i < b.length; i++) {
            int hi = Character.digit(s.charAt(2 * i), 16);
            int lo = Character.digit(s.charAt(2 * i + 1), 16);
            if (hi < 0 || lo < 0) {
                throw new IllegalArgumentException("not a hex digit near offset " + (2 * i));
            }
            b[i] = (byte) ((hi << 4) | lo);
        }
        return b;
    }

    static String hostPort(Member m) {
        String host;
        try {
            host = InetAddress.getByAddress(m.getHost()).getHostAddress();
        } catch (UnknownHostException e) {
            host = "?" + hex(m.getHost());
        }
        return host + ":" + m.getPort();
    }

    static String describe(Member m) {
        return hostPort(m) + " " + hex(m.getUniqueId());
    }

    private static Map<String, String> parseArgs(String[] args) {
        Map<String, String> opts = new HashMap<>();
        opts.put("--mcast-address", "228.0.0.4");
        opts.put("--receiver-port", "4000");
        opts.put("--frequency", "100");
        opts.put("--drop-time", "1000");
        opts.put("--max-seconds", "120");
        opts.put("--interceptors", "dispatch,tfd");
        for (int i = 0; i < args.length; i++) {
            String k = args[i];
            if (!opts.containsKey(k) && !k.equals("--mcast-port") && !k.equals("--encrypt-key")) {
                throw new IllegalArgumentException("unknown option " + k);
            }
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException("missing value for " + k);
            }
            opts.put(k, args[++i]);
        }
        if (!opts.containsKey("--mcast-port")) {
            throw new IllegalArgumentException("--mcast-port is required");
        }
        return opts;
    }

    private static void send(String payloadHex, int options) {
        byte[] data;
        try {
            data = unhex(payloadHex);
        } catch (IllegalArgumentException e) {
            out("ERR bad hex: " + e.getMessage());
            return;
        }
        Member[] members = channel.getMembers();
        try {
            channel.send(members, new ByteMessage(data), options);
            out("SENT " + members.length);
        } catch (ChannelException e) {
            out("SENDFAIL " + String.valueOf(e.getMessage()).replace('\n', ' ').replace('\r', ' '));
        } catch (RuntimeException e) {
            out("SENDFAIL " + e.getClass().getName() + ": "
                    + String.valueOf(e.getMessage()).replace('\n', ' ').replace('\r', ' '));
        }
    }

    private static void members() {
        Member[] members = channel.getMembers();
        StringBuilder sb = new StringBuilder("MEMBERS ").append(members.length);
        for (int i = 0; i < members.length; i++) {
            sb.append(i == 0 ? ' ' : ',').append(hostPort(members[i]));
        }
        out(sb.toString());
    }

    /** Stop the channel at most once; the McastService stop sends the shutdown heartbeat. */
    private static synchronized void shutdown() {
        if (stopping) {
            return;
        }
        stopping = true;
        try {
            channel.stop(Channel.DEFAULT);
        } catch (Exception e) {
            System.err.println("TribesPeer: stop failed: " + e);
        }
    }

    public static void main(String[] args) throws Exception {
        // Linux: with the default dual-stack (IPv6) sockets, a MulticastSocket bound to the IPv4 group
        // address -- which McastService does when `bind` is set -- fails every send with
        // "SocketException: Invalid argument". Use IPv4 sockets unless told otherwise. This must run
        // before any java.net class initializes; the tests also pass -Djava.net.preferIPv4Stack=true.
        if (System.getProperty("java.net.preferIPv4Stack") == null) {
            System.setProperty("java.net.preferIPv4Stack", "true");
        }
        Map<String, String> opts;
        try {
            opts = parseArgs(args);
        } catch (IllegalArgumentException e) {
            System.err.println("TribesPeer: " + e.getMessage());
            System.exit(64);
            return;
        }
        int mcastPort = Integer.parseInt(opts.get("--mcast-port"));
        int receiverPort = Integer.parseInt(opts.get("--receiver-port"));
        long frequency = Long.parseLong(opts.get("--frequency"));
        long dropTime = Long.parseLong(opts.get("--drop-time"));
        long maxSeconds = Long.parseLong(opts.get("--max-seconds"));

        // Safety bound: whatever happens, this process ends after --max-seconds.
        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(maxSeconds * 1000L);
            } catch (InterruptedException e) {
                return;
            }
            out("TIMEOUT");
            Thread stopper = new Thread(TribesPeer::shutdown, "TribesPeer-timeout-stop");
            stopper.setDaemon(true);
            stopper.start();
            try {
                stopper.join(5000);
            } catch (InterruptedException e) {
                // fall through to exit
            }
            Runtime.getRuntime().halt(3);
        }, "TribesPeer-watchdog");
        watchdog.setDaemon(true);
        watchdog.start();

        channel = new GroupChannel();
        channel.setName("TribesPeer-" + mcastPort + "-" + receiverPort);

        McastService mcast = new McastService();
        mcast.setAddress(opts.get("--mcast-address"));
        mcast.setPort(mcastPort);
        mcast.setBind(LOOPBACK);
        mcast.setTtl(0);
        mcast.setFrequency(frequency);
        mcast.setDropTime(dropTime);
        channel.setMembershipService(mcast);

        NioReceiver receiver = new NioReceiver();
        receiver.setAddress(LOOPBACK);
        receiver.setPort(receiverPort);
        receiver.setAutoBind(100);
        channel.setChannelReceiver(receiver);
        // Sender: GroupChannel's default ReplicationTransmitter (PooledParallelSender).

        String stack = opts.get("--interceptors").trim();
        String encryptKey = opts.get("--encrypt-key");
        List<String> names = new ArrayList<>();
        if (!stack.equals("none") && !stack.isEmpty()) {
            for (String name : stack.split(",")) {
                names.add(name.trim());
            }
        }
        if (encryptKey == null && names.contains("encrypt")) {
            System.err.println("TribesPeer: interceptor encrypt needs --encrypt-key");
            System.exit(64);
            return;
        }
        if (encryptKey != null && !names.contains("encrypt")) {
            int tfd = names.indexOf("tfd");
            names.add(tfd < 0 ? names.size() : tfd, "encrypt");
        }
        if (!names.isEmpty()) {
            for (String name : names) {
                switch (name) {
                    case "dispatch":
                        channel.addInterceptor(new MessageDispatchInterceptor());
                        break;
                    case "tfd":
                        channel.addInterceptor(new TcpFailureDetector());
                        break;
                    case "encrypt":
                        EncryptInterceptor encrypt = new EncryptInterceptor();
                        encrypt.setEncryptionAlgorithm("AES/GCM/NoPadding");
                        try {
                            encrypt.setEncryptionKey(encryptKey);
                        } catch (IllegalArgumentException e) {
                            System.err.println("TribesPeer: bad --encrypt-key: " + e.getMessage());
                            System.exit(64);
                            return;
                        }
                        channel.addInterceptor(encrypt);
                        break;
                    default:
                        System.err.println("TribesPeer: unknown interceptor " + name);
                        System.exit(64);
                        return;
                }
            }
        }

        channel.addChannelListener(new ChannelListener() {
            @Override
            public void messageReceived(Serializable msg, Member sender) {
                if (msg instanceof ByteMessage) {
                    byte[] b = ((ByteMessage) msg).getMessage();
                    out("MSG " + hostPort(sender) + " " + (b == null || b.length == 0 ? "-" : hex(b)));
                } else {
                    out("OBJ " + hostPort(sender) + " " + (msg == null ? "null" : msg.getClass().getName()));
                }
            }

            @Override
            public boolean accept(Serializable msg, Member sender) {
                return true;
            }
        });
        channel.addMembershipListener(new MembershipListener() {
            @Override
            public void memberAdded(Member member) {
                out("ADDED " + describe(member));
            }

            @Override
            public void memberDisappeared(Member member) {
                out("GONE " + describe(member));
            }
        });

        try {
            channel.start(Channel.DEFAULT);
        } catch (Exception e) {
            e.printStackTrace();
            out("STARTFAIL " + String.valueOf(e.getMessage()).replace('\n', ' ').replace('\r', ' '));
            // Whatever part of the channel did start may hold non-daemon threads: exit explicitly.
            Runtime.getRuntime().halt(2);
            return;
        }
        out("READY " + describe(channel.getLocalMember(true)));

        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            line = line.trim();
            if (line.isEmpty()) {
                continue;
            }
            int sp = line.indexOf(' ');
            String cmd = sp < 0 ? line : line.substring(0, sp);
            String arg = sp < 0 ? "" : line.substring(sp + 1).trim();
            switch (cmd) {
                case "SEND":
                    send(arg, Channel.SEND_OPTIONS_USE_ACK);
                    break;
                case "SENDSYNC":
                    send(arg, Channel.SEND_OPTIONS_USE_ACK | Channel.SEND_OPTIONS_SYNCHRONIZED_ACK);
                    break;
                case "SENDASYNC":
                    send(arg, Channel.SEND_OPTIONS_ASYNCHRONOUS);
                    break;
                case "MEMBERS":
                    members();
                    break;
                case "QUIT":
                    shutdown();
                    out("BYE");
                    System.exit(0);
                    return;
                default:
                    out("ERR unknown command " + cmd);
            }
        }
        shutdown();
        out("BYE");
        System.exit(0);
    }
}
